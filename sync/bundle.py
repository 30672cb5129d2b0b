"""The bundle format: the one stream of frames that carries feeds on LAN, USB and to the hub.

A bundle is a header (magic + format version) followed by frames; each frame is a type
byte, a varint payload length, the payload and a CRC-32 of all three. The codec is
sans-I/O: `encode_frame` turns frames into bytes, `BundleDecoder.feed` turns bytes (in
any slicing) into frames, and `FeedChunker` cuts one origin's entries into bounded
`Entries` frames, each run closed by the signed checkpoint that covers it. The format
is described for humans, with its limits, in docs/protocol.md.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import zstandard

from simpul.sync.feed import RECORD_ID_BYTES, Checkpoint, Entry
from simpul.sync.frontier import ORIGIN_BYTES, Frontier, FrontierError
from simpul.sync.varint import VarintError, VarintTruncated, decode_varint, encode_varint

MAGIC = b"SIMPULB"
FORMAT_VERSION = 1
HEADER = MAGIC + bytes([FORMAT_VERSION])

MAX_FRAME_BYTES = 8 * 1024 * 1024  # a frame's payload, and an entries frame uncompressed
CHUNK_MAX_ENTRIES = 1000  # the encoder's bound per entries frame (the decoder's too) ...
CHUNK_MAX_BYTES = 1024 * 1024  # ... and on its raw change bytes
ZSTD_LEVEL = 3

PUBLIC_KEY_BYTES = 32
CHAIN_BYTES = 32
SIGNATURE_BYTES = 64
CRC_BYTES = 4
MIN_ENTRY_BYTES = RECORD_ID_BYTES + 1  # an entry's record id and its change length

HELLO, CERTIFICATE, ENTRIES, CHECKPOINT, FRONTIER, END = range(1, 7)


class BundleError(Exception):
    """Bytes that are not a valid bundle: why, at which byte offset of the stream, and the
    valid frames decoded by the failing `feed` call before the problem."""

    def __init__(self, reason: str, offset: int, frames: list[Frame] | None = None) -> None:
        super().__init__(f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset
        self.frames: list[Frame] = frames or []


@dataclass(frozen=True)
class Hello:
    """Who writes this stream: format version, node id, network id (empty: no network)."""

    version: int
    node_id: bytes
    network_id: bytes = b""


@dataclass(frozen=True)
class Certificate:
    """What verifies an origin: its raw Ed25519 public key and certificate (PEM, or empty)."""

    origin: bytes
    public_key: bytes
    certificate: bytes = b""


@dataclass(frozen=True)
class Entries:
    """Consecutive entries of one origin from `first_seq`: (record id, raw change) each."""

    origin: bytes
    first_seq: int
    items: tuple[tuple[bytes, bytes], ...]

    def feed_entries(self) -> list[Entry]:
        return [
            Entry(self.origin, self.first_seq + i, rid, change)
            for i, (rid, change) in enumerate(self.items)
        ]


@dataclass(frozen=True)
class End:
    """The writer has nothing more to say in this stream."""


Frame = Hello | Certificate | Entries | Checkpoint | Frontier | End


class _Malformed(Exception):
    """A frame payload that does not parse; the decoder adds the offset."""


class _Reader:
    """Strict left-to-right parsing of one payload."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, count: int, what: str) -> bytes:
        if self.pos + count > len(self.data):
            raise _Malformed(f"payload cut short in {what}")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def varint(self, what: str) -> int:
        try:
            value, self.pos = decode_varint(self.data, self.pos)
        except VarintError as exc:
            raise _Malformed(f"{what}: {exc}") from None
        return value

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk

    def done(self, what: str) -> None:
        if self.pos != len(self.data):
            raise _Malformed(f"{len(self.data) - self.pos} unexpected bytes after {what}")


def _encode_items(items: tuple[tuple[bytes, bytes], ...]) -> bytes:
    return b"".join(rid + encode_varint(len(change)) + change for rid, change in items)


def _payload(frame: Frame) -> tuple[int, bytes]:
    if isinstance(frame, Hello):
        return HELLO, b"".join(
            [
                encode_varint(frame.version),
                frame.node_id,
                encode_varint(len(frame.network_id)),
                frame.network_id,
            ]
        )
    if isinstance(frame, Certificate):
        return CERTIFICATE, frame.origin + frame.public_key + frame.certificate
    if isinstance(frame, Entries):
        raw = _encode_items(frame.items)
        packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
        head = [encode_varint(v) for v in (frame.first_seq, len(frame.items), len(raw))]
        return ENTRIES, frame.origin + b"".join(head) + packed
    if isinstance(frame, Checkpoint):
        return CHECKPOINT, b"".join(
            [
                frame.origin,
                encode_varint(frame.seq),
                frame.chain,
                encode_varint(frame.at_ms),
                frame.signature,
            ]
        )
    if isinstance(frame, Frontier):
        return FRONTIER, frame.encode()
    return END, b""


def encode_frame(frame: Frame) -> bytes:
    """One frame as bytes: type, varint length, payload, CRC-32 (big-endian) of the three."""
    kind, payload = _payload(frame)
    if len(payload) > MAX_FRAME_BYTES:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    body = bytes([kind]) + encode_varint(len(payload)) + payload
    return body + struct.pack(">I", zlib.crc32(body))


def _decode_entries(reader: _Reader) -> Entries:
    origin = reader.take(ORIGIN_BYTES, "origin")
    first_seq = reader.varint("first seq")
    count = reader.varint("entry count")
    raw_size = reader.varint("uncompressed size")
    if first_seq < 1:
        raise _Malformed("entries start below seq 1")
    if raw_size > MAX_FRAME_BYTES:
        raise _Malformed(f"entries frame of {raw_size} bytes uncompressed exceeds the limit")
    # a few bytes of zstd can announce millions of empty changes: bound the work up front
    if count > CHUNK_MAX_ENTRIES:
        raise _Malformed(f"entries frame of {count} entries exceeds the {CHUNK_MAX_ENTRIES} limit")
    if count * MIN_ENTRY_BYTES > raw_size:
        raise _Malformed(f"{count} entries cannot fit in {raw_size} bytes")
    # read at most one byte more than announced: the zstd header's own size is not trusted
    source = io.BytesIO(reader.rest())
    try:
        with zstandard.ZstdDecompressor().stream_reader(source) as stream:
            raw = stream.read(raw_size + 1)
    except zstandard.ZstdError as exc:
        raise _Malformed(f"entries do not decompress: {exc}") from None
    if len(raw) != raw_size:
        raise _Malformed("entries decompress to a different size than announced")
    body = _Reader(raw)
    items = []
    for _ in range(count):
        rid = body.take(RECORD_ID_BYTES, "record id")
        items.append((rid, body.take(body.varint("change length"), "change")))
    body.done("the last entry")
    return Entries(origin, first_seq, tuple(items))


def _decode_payload(kind: int, payload: bytes) -> Frame:
    reader = _Reader(payload)
    frame: Frame
    if kind == HELLO:
        version = reader.varint("version")
        node_id = reader.take(ORIGIN_BYTES, "node id")
        frame = Hello(version, node_id, reader.take(reader.varint("network id"), "network id"))
    elif kind == CERTIFICATE:
        origin = reader.take(ORIGIN_BYTES, "origin")
        frame = Certificate(origin, reader.take(PUBLIC_KEY_BYTES, "public key"), reader.rest())
    elif kind == ENTRIES:
        frame = _decode_entries(reader)
    elif kind == CHECKPOINT:
        origin = reader.take(ORIGIN_BYTES, "origin")
        seq = reader.varint("seq")
        chain = reader.take(CHAIN_BYTES, "chain")
        at_ms = reader.varint("time")
        frame = Checkpoint(origin, seq, chain, at_ms, reader.take(SIGNATURE_BYTES, "signature"))
    elif kind == FRONTIER:
        try:
            frame = Frontier.decode(reader.rest())
        except FrontierError as exc:
            raise _Malformed(str(exc)) from None
    elif kind == END:
        frame = End()
    else:
        raise _Malformed(f"unknown frame type {kind}")
    reader.done(f"frame type {kind}")
    return frame


class BundleDecoder:
    """Incremental bundle parser: feed it bytes as they come, get back complete frames.

    Each `feed` returns every complete frame so far; on a problem it raises BundleError
    whose `frames` are the valid frames that came before it in that call, and the decoder
    stays failed. `frames` does the same one frame at a time, so a caller can give other
    work a turn between frames. `close` at the end of input reports a stream cut short.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._max = max_frame_bytes
        self._buffer = b""
        self._pos = 0  # bytes of self._buffer already decoded
        self._offset = 0  # stream offset of self._buffer[0]
        self._started = False
        self._ended = False
        self._failure: tuple[str, int] | None = None

    @property
    def ended(self) -> bool:
        """True once the end frame has been read."""
        return self._ended

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        try:
            frames.extend(self.frames(data))
        except BundleError as exc:
            exc.frames = frames
            raise
        return frames

    def frames(self, data: bytes) -> Iterator[Frame]:
        """Add `data`, then yield each complete frame as it is decoded (BundleError on a
        problem, after the valid frames before it). Exhaust it before feeding more."""
        if self._failure:
            raise BundleError(*self._failure)
        self._offset += self._pos
        self._buffer = self._buffer[self._pos :] + data
        self._pos = 0
        try:
            while True:
                frame, consumed = self._next(self._pos)
                if not consumed:
                    return
                self._pos += consumed
                if frame is not None:
                    yield frame
        except BundleError as exc:
            self._failure = (exc.reason, exc.offset)
            raise

    def _fail(self, reason: str, pos: int) -> BundleError:
        return BundleError(reason, self._offset + pos)

    def _next(self, pos: int) -> tuple[Frame | None, int]:
        """Parse the header or one frame at `pos`: the frame (None for the header) and the
        bytes consumed, 0 when more are needed."""
        buf = self._buffer
        if not self._started:
            if len(buf) - pos < len(HEADER):
                if not MAGIC.startswith(buf[pos : pos + len(MAGIC)]):
                    raise self._fail("not a Simpul bundle (bad magic)", pos)
                return None, 0
            if buf[pos : pos + len(MAGIC)] != MAGIC:
                raise self._fail("not a Simpul bundle (bad magic)", pos)
            version = buf[pos + len(MAGIC)]
            if version != FORMAT_VERSION:
                raise self._fail(
                    f"unsupported bundle format version {version} (this node reads "
                    f"version {FORMAT_VERSION})",
                    pos + len(MAGIC),
                )
            self._started = True
            return None, len(HEADER)
        if pos == len(buf):
            return None, 0
        if self._ended:
            raise self._fail("data after the end frame", pos)
        try:
            length, start = decode_varint(buf, pos + 1)
        except VarintTruncated:
            return None, 0
        except VarintError as exc:
            raise self._fail(f"bad frame length: {exc}", pos + 1) from None
        if length > self._max:
            raise self._fail(f"frame of {length} bytes exceeds the {self._max} byte limit", pos)
        end = start + length + CRC_BYTES
        if len(buf) < end:
            return None, 0
        (crc,) = struct.unpack(">I", buf[end - CRC_BYTES : end])
        if zlib.crc32(buf[pos : end - CRC_BYTES]) != crc:
            raise self._fail("frame checksum mismatch (corrupted bytes)", pos)
        try:
            frame = _decode_payload(buf[pos], buf[start : end - CRC_BYTES])
        except _Malformed as exc:
            raise self._fail(f"malformed frame: {exc}", pos) from None
        self._ended = isinstance(frame, End)
        return frame, end - pos

    def close(self) -> None:
        """The input has ended: BundleError unless it ended right after an end frame."""
        if self._failure:
            raise BundleError(*self._failure)
        if len(self._buffer) > self._pos:
            raise BundleError(
                f"stream cut short: {len(self._buffer) - self._pos} bytes of an incomplete "
                f"{'frame' if self._started else 'header'}",
                self._offset + self._pos,
            )
        if not self._ended:
            raise BundleError("stream cut short before the end frame", self._offset + self._pos)


def decode_bundle(data: bytes) -> list[Frame]:
    """Every frame of a complete bundle held in memory; BundleError as for the decoder."""
    decoder = BundleDecoder()
    frames = decoder.feed(data)
    try:
        decoder.close()
    except BundleError as exc:
        exc.frames = frames
        raise
    return frames


class FeedChunker:
    """Cuts one origin's entries (fed in seq order) into bounded frames.

    Entries go out in `Entries` frames of at most `max_entries` entries or about
    `max_bytes` of changes; an entry that a checkpoint covers (passed with it) closes its
    frame and is followed by that `Checkpoint`, so a receiver commits exactly what a
    signature covers. The caller stops at the origin's last checkpoint: entries past it
    are never sent.
    """

    def __init__(
        self, max_entries: int = CHUNK_MAX_ENTRIES, max_bytes: int = CHUNK_MAX_BYTES
    ) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._items: list[Entry] = []
        self._bytes = 0

    def add(self, entry: Entry, checkpoint: Checkpoint | None) -> list[Frame]:
        self._items.append(entry)
        self._bytes += len(entry.change)
        if checkpoint is not None:
            return [self._flush(), checkpoint]
        if len(self._items) >= self._max_entries or self._bytes >= self._max_bytes:
            return [self._flush()]
        return []

    def _flush(self) -> Entries:
        first = self._items[0]
        frame = Entries(
            first.origin, first.seq, tuple((e.record_id, e.change) for e in self._items)
        )
        self._items = []
        self._bytes = 0
        return frame
