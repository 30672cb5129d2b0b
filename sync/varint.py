"""Unsigned LEB128 varints, the integer encoding of frontiers and bundle frames."""

from __future__ import annotations

MAX_VARINT_BYTES = 10  # enough for any 64-bit value


class VarintError(ValueError):
    """Bytes that do not hold a complete, well-formed varint at the given position."""


class VarintTruncated(VarintError):
    """The bytes end inside the varint: more input may complete it."""


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it; VarintError when cut short or too long."""
    value = 0
    for index in range(MAX_VARINT_BYTES):
        if pos + index >= len(data):
            raise VarintTruncated("varint cut short")
        byte = data[pos + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if index and not byte:
                raise VarintError("varint not in its shortest form")
            return value, pos + index + 1
    raise VarintError("varint longer than 10 bytes")
