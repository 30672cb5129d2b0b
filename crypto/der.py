"""A minimal, strict DER codec for the values of Simpul's own X.509 extensions.

`cryptography` parses and builds certificates but cannot encode arbitrary ASN.1, and the
custom extensions (see `x509_profile`) need only SEQUENCE, OCTET STRING, UTF8String and
NumericString. Decoding is strict: definite, minimal lengths only, no trailing bytes, so a
value has exactly one encoding and `openssl asn1parse` shows it as ordinary ASN.1.
"""

from __future__ import annotations

SEQUENCE = 0x30
OCTET_STRING = 0x04
UTF8_STRING = 0x0C
NUMERIC_STRING = 0x12

_MAX_LENGTH_OCTETS = 4


class DerError(ValueError):
    """Bytes that are not the strict DER this module expects."""


def encode(tag: int, content: bytes) -> bytes:
    """One DER TLV: `tag`, minimal definite length, `content`."""
    size = len(content)
    if size < 0x80:
        length = bytes([size])
    else:
        raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def sequence(*items: bytes) -> bytes:
    """A SEQUENCE of already encoded items."""
    return encode(SEQUENCE, b"".join(items))


class DerReader:
    """Reads consecutive TLVs from one DER buffer, checking each tag."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def finish(self) -> None:
        """Fail unless every byte was consumed."""
        if not self.at_end():
            raise DerError("trailing bytes after DER value")

    def read(self, tag: int) -> bytes:
        """The content of the next TLV, which must carry `tag`."""
        data, pos = self._data, self._pos
        if pos + 2 > len(data):
            raise DerError("truncated DER header")
        if data[pos] != tag:
            raise DerError(f"expected tag 0x{tag:02x}, found 0x{data[pos]:02x}")
        first = data[pos + 1]
        pos += 2
        if first < 0x80:
            size = first
        else:
            count = first & 0x7F
            if count == 0 or count > _MAX_LENGTH_OCTETS or pos + count > len(data):
                raise DerError("unsupported or truncated DER length")
            raw = data[pos : pos + count]
            size = int.from_bytes(raw, "big")
            if raw[0] == 0 or size < 0x80:
                raise DerError("non-minimal DER length")
            pos += count
        if pos + size > len(data):
            raise DerError("truncated DER content")
        self._pos = pos + size
        return data[pos : pos + size]

    def read_sequence(self) -> DerReader:
        return DerReader(self.read(SEQUENCE))

    def read_text(self, tag: int) -> str:
        """A string type (UTF8String, NumericString) decoded to `str`."""
        try:
            return self.read(tag).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DerError("string value is not UTF-8") from exc
