"""Chunked AEAD: a byte stream sealed in fixed-size segments, each AES-256-GCM on its own.

Sealing a whole file as one AEAD message would make a truncated or damaged file yield
nothing; sealing it in segments lets a reader verify and keep every complete segment
before the damage. Segment `i` (counting from 0) of a stream is sealed with

    nonce = prefix (8 random bytes, fresh per stream) | i (4 bytes, big-endian)
    associated data = the caller's `context` (e.g. the signed file header)

so segments cannot be reordered, moved between streams or separated from their header
without failing authentication. Every segment holds `segment_bytes` of plaintext except
the last, which holds the rest (1 byte or more); each adds a 16-byte tag. The stream's
plaintext length is part of the context the caller binds, so where a stream ends is
authenticated too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_PREFIX_BYTES = 8
TAG_BYTES = 16
KEY_BYTES = 32
MAX_SEGMENTS = 1 << 32


class SegmentError(Exception):
    """A segment that does not authenticate: tampered, corrupted, or sealed with another key."""

    def __init__(self, index: int, offset: int) -> None:
        super().__init__(f"segment {index} at byte {offset} does not authenticate")
        self.index = index
        self.offset = offset


def new_nonce_prefix() -> bytes:
    return os.urandom(NONCE_PREFIX_BYTES)


def _nonce(prefix: bytes, index: int) -> bytes:
    if index >= MAX_SEGMENTS:
        raise ValueError("too many segments in one stream")
    return prefix + index.to_bytes(4, "big")


def sealed_size(plain_bytes: int, segment_bytes: int) -> int:
    """Bytes of the sealed stream for `plain_bytes` of plaintext."""
    return plain_bytes + TAG_BYTES * segment_count(plain_bytes, segment_bytes)


def segment_count(plain_bytes: int, segment_bytes: int) -> int:
    return -(-plain_bytes // segment_bytes)


def seal(key: bytes, prefix: bytes, context: bytes, plain: bytes, segment_bytes: int) -> bytes:
    """`plain` sealed segment by segment under `key` (32 bytes)."""
    aead = AESGCM(key)
    return b"".join(
        aead.encrypt(_nonce(prefix, i), plain[start : start + segment_bytes], context)
        for i, start in enumerate(range(0, len(plain), segment_bytes))
    )


@dataclass(frozen=True)
class SealedLayout:
    """Where each segment of a sealed stream of `plain_bytes` lies (offsets from its start)."""

    plain_bytes: int
    segment_bytes: int

    def segments(self) -> Iterator[tuple[int, int, int]]:
        """(index, offset, sealed length) of each segment, in order."""
        offset = 0
        for index in range(segment_count(self.plain_bytes, self.segment_bytes)):
            plain = min(self.segment_bytes, self.plain_bytes - index * self.segment_bytes)
            yield index, offset, plain + TAG_BYTES
            offset += plain + TAG_BYTES


def open_segments(
    key: bytes,
    prefix: bytes,
    context: bytes,
    read: Callable[[int, int], bytes],
    layout: SealedLayout,
    base: int = 0,
) -> Iterator[bytes]:
    """The plaintext of each complete segment of a sealed stream, in order.

    `read(offset, length)` gives up to `length` bytes of the stream from `offset` (fewer
    where it ends), so a caller can stream a file segment by segment instead of holding
    it whole. Stops quietly where the stream ends before a segment does (the caller
    compares the length with the layout to report a truncation); raises SegmentError
    (with the offset plus `base`) at the first segment that does not authenticate."""
    aead = AESGCM(key)
    for index, offset, length in layout.segments():
        sealed = read(offset, length)
        if len(sealed) < length:
            return
        try:
            yield aead.decrypt(_nonce(prefix, index), sealed, context)
        except InvalidTag:
            raise SegmentError(index, base + offset) from None
