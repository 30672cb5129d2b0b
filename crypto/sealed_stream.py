"""AES-256-GCM over a stream of any length, in authenticated segments (the STREAM construction).

One AES-GCM message must fit in memory and must not exceed 64 GiB, and a stream cut short
must be detected. So the plaintext is cut into segments of `SEGMENT_BYTES`; segment `i`
is sealed with the nonce ``prefix (7 bytes) | i (u32, big-endian) | last (1 byte)`` and the
file header as associated data. Reordering, dropping or swapping segments breaks a tag,
and only a segment sealed with `last = 1` may end the stream, so truncation is detected too
(Hoang, Reyhanitabar, Rogaway, Vizár: "Online Authenticated-Encryption and its Nonce-Reuse
Misuse-Resistance", CRYPTO 2015). Each key seals one stream only (fresh salt per file).
"""

from __future__ import annotations

import io
import os
import struct
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEGMENT_BYTES = 64 * 1024
PREFIX_BYTES = 7
TAG_BYTES = 16
MAX_SEGMENTS = 2**32 - 1
_COUNTER = struct.Struct(">IB")


class SealError(ValueError):
    """The stream was altered, truncated, or sealed under another key."""


def new_prefix() -> bytes:
    return os.urandom(PREFIX_BYTES)


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index > MAX_SEGMENTS:
        raise SealError("stream too long")
    return prefix + _COUNTER.pack(index, int(last))


class _Segments(io.RawIOBase):
    """What both directions share: the key, the nonce prefix, the header, the segment count."""

    def __init__(self, key: bytes, prefix: bytes, associated: bytes) -> None:
        super().__init__()
        self._aead = AESGCM(key)
        self._prefix = prefix
        self._associated = associated
        self._index = 0


class SealingWriter(_Segments):
    """A writable file: what is written is sealed segment by segment into `out`.

    `close()` seals the final segment (possibly empty): a stream without it is truncated.
    """

    def __init__(self, out: BinaryIO, key: bytes, prefix: bytes, associated: bytes) -> None:
        super().__init__(key, prefix, associated)
        self._out = out
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._buffer += data
        while len(self._buffer) > SEGMENT_BYTES:  # keep one for the final, "last" segment
            self._seal(bytes(self._buffer[:SEGMENT_BYTES]), last=False)
            del self._buffer[:SEGMENT_BYTES]
        return len(data)

    def _seal(self, segment: bytes, last: bool) -> None:
        nonce = _nonce(self._prefix, self._index, last)
        self._out.write(self._aead.encrypt(nonce, segment, self._associated))
        self._index += 1

    def close(self) -> None:
        if not self.closed:
            self._seal(bytes(self._buffer), last=True)
            self._buffer.clear()
        super().close()


class OpeningReader(_Segments):
    """A readable file of the plaintext of a sealed stream read from `source`.

    Raises SealError on the first segment that fails to open, and at the end when the
    stream stops before its final segment.
    """

    def __init__(self, source: BinaryIO, key: bytes, prefix: bytes, associated: bytes) -> None:
        super().__init__(key, prefix, associated)
        self._source = source
        self._plain = b""
        self._ahead = source.read(SEGMENT_BYTES + TAG_BYTES)
        self._done = False

    def readable(self) -> bool:
        return True

    def _next_segment(self) -> None:
        current = self._ahead
        self._ahead = self._source.read(SEGMENT_BYTES + TAG_BYTES) if current else b""
        last = not self._ahead
        if len(current) < TAG_BYTES:
            raise SealError("the stream ends before its final segment (truncated)")
        try:
            self._plain = self._aead.decrypt(
                _nonce(self._prefix, self._index, last), current, self._associated
            )
        except InvalidTag:
            reason = "truncated, altered" if last and self._index else "altered"
            detail = f"segment {self._index} does not open: {reason}, or wrong key"
            raise SealError(detail) from None
        self._index += 1
        self._done = last

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._plain and not self._done:
            self._next_segment()
        count = min(len(buffer), len(self._plain))
        buffer[:count] = self._plain[:count]
        self._plain = self._plain[count:]
        return count
