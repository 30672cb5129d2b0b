"""The USB bundle file (drive file format 1): a signed header, then a bundle sealed in segments.

Layout (docs/protocol.md, "USB drive files"):

    "SIMPULU" | format 1 byte (= 1) | header length: 4 bytes BE | header: UTF-8 JSON
              | writer's Ed25519 signature over everything before it: 64 bytes
              | the bundle stream, sealed in segments (crypto/sealed_segments.py)

The header names the network, the writer (with its certificate), the data key (id and
epoch), the nonce prefix, the time of writing, the segment size, the bundle's length and
what it carries (origins with seq ranges): enough to inspect a drive without the key. It
is signed by the writing node, and SHA-256 of the signed bytes and signature is the
associated data of every segment, so nothing in the body can be moved to another header.

Sans-I/O: `build_drive_file` turns frames into file bytes, `read_drive_header` reads a
header from a `Source` (`parse_drive_file` from bytes), `DriveFileReader` turns a
source into batches of verified frames and a report of where and why it stopped. A
source is anything that gives its size and the bytes at an offset, so a file on a drive
is read segment by segment: memory stays bounded by a batch, whatever the file's size.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Protocol

from simpul.crypto.node_key import verify_signature
from simpul.crypto.sealed_segments import (
    NONCE_PREFIX_BYTES,
    SealedLayout,
    SegmentError,
    new_nonce_prefix,
    open_segments,
    seal,
    sealed_size,
)
from simpul.sync.bundle import (
    HEADER,
    SIGNATURE_BYTES,
    BundleDecoder,
    BundleError,
    End,
    Entries,
    Frame,
    Hello,
    encode_frame,
)
from simpul.sync.frontier import ORIGIN_BYTES

MAGIC = b"SIMPULU"
FILE_FORMAT = 1
PREAMBLE = struct.Struct(">7sBI")  # magic, format, header length
MAX_HEADER_BYTES = 1024 * 1024
SEGMENT_BYTES = 16 * 1024
MAX_TIME_MS = 253_402_300_799_999  # the end of year 9999 UTC
BATCH_SEGMENTS = 64  # segments decoded per batch of frames handed to the caller (1 MiB)


class DriveFileError(Exception):
    """A drive file that cannot be read (further): why, at which byte of the file, and the
    kind of problem: `unreadable` (its header), `truncated` or `corrupted` (its body)."""

    def __init__(self, reason: str, offset: int, kind: str = "unreadable") -> None:
        super().__init__(f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset
        self.kind = kind


@dataclass(frozen=True)
class OriginRange:
    """Entries of one origin carried in a file: seqs `first` to `last`, inclusive."""

    origin: str
    first: int
    last: int


@dataclass(frozen=True)
class DriveHeader:
    """What a drive file says about itself (signed by its writer, readable without the key)."""

    network: str  # network id, hex
    writer: str  # node id, hex
    certificate: str  # the writer's certificate, PEM
    key_id: str
    epoch: int
    nonce: str  # hex of the 8-byte nonce prefix
    created_ms: int
    segment_bytes: int
    plain_bytes: int
    entries: int
    origins: tuple[OriginRange, ...] = field(default_factory=tuple)

    def to_bytes(self) -> bytes:
        document = asdict(self)
        document["origins"] = [[r.origin, r.first, r.last] for r in self.origins]
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> DriveHeader:
        try:
            document = json.loads(data)
            origins = tuple(OriginRange(str(o), int(f), int(t)) for o, f, t in document["origins"])
            header = cls(
                network=str(document["network"]),
                writer=str(document["writer"]),
                certificate=str(document["certificate"]),
                key_id=str(document["key_id"]),
                epoch=int(document["epoch"]),
                nonce=str(document["nonce"]),
                created_ms=int(document["created_ms"]),
                segment_bytes=int(document["segment_bytes"]),
                plain_bytes=int(document["plain_bytes"]),
                entries=int(document["entries"]),
                origins=origins,
            )
            if len(bytes.fromhex(header.nonce)) != NONCE_PREFIX_BYTES:
                raise ValueError("nonce prefix must be 8 bytes")
            for span in origins:
                if (
                    len(bytes.fromhex(span.origin)) != ORIGIN_BYTES
                    or not 1 <= span.first <= span.last
                ):
                    raise ValueError(f"bad origin range {span}")
        except RecursionError:
            raise ValueError("malformed file header: nested too deeply") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"malformed file header: {exc}") from None
        if header.segment_bytes < 1 or header.plain_bytes < len(HEADER) or header.entries < 0:
            raise ValueError("malformed file header: impossible sizes")
        if not 0 <= header.created_ms <= MAX_TIME_MS:
            raise ValueError("malformed file header: time out of range")
        return header

    def frontier(self) -> dict[bytes, tuple[int, int]]:
        return {bytes.fromhex(r.origin): (r.first, r.last) for r in self.origins}


def carried(frames: list[Frame]) -> tuple[tuple[OriginRange, ...], int]:
    """The origin ranges and entry count the entries frames of `frames` carry."""
    ranges: dict[bytes, list[int]] = {}
    count = 0
    for frame in frames:
        if isinstance(frame, Entries) and frame.items:
            last = frame.first_seq + len(frame.items) - 1
            ranges.setdefault(frame.origin, [frame.first_seq, last])[1] = last
            count += len(frame.items)
    return tuple(OriginRange(o.hex(), f, t) for o, (f, t) in sorted(ranges.items())), count


def build_drive_file(
    hello: Hello,
    frames: list[Frame],
    *,
    certificate: bytes,
    key_id: str,
    epoch: int,
    secret: bytes,
    sign: Callable[[bytes], bytes],
    created_ms: int,
    segment_bytes: int = SEGMENT_BYTES,
) -> bytes:
    """One complete drive file carrying `frames` (header, hello, the frames, end)."""
    bundle = b"".join(
        [HEADER, encode_frame(hello), *(encode_frame(f) for f in frames), encode_frame(End())]
    )
    origins, entries = carried(frames)
    prefix = new_nonce_prefix()
    header = DriveHeader(
        network=hello.network_id.hex(),
        writer=hello.node_id.hex(),
        certificate=certificate.decode("ascii"),
        key_id=key_id,
        epoch=epoch,
        nonce=prefix.hex(),
        created_ms=created_ms,
        segment_bytes=segment_bytes,
        plain_bytes=len(bundle),
        entries=entries,
        origins=origins,
    ).to_bytes()
    signed = PREAMBLE.pack(MAGIC, FILE_FORMAT, len(header)) + header
    signature = sign(signed)
    context = hashlib.sha256(signed + signature).digest()
    return signed + signature + seal(secret, prefix, context, bundle, segment_bytes)


@dataclass(frozen=True)
class DriveFile:
    """A parsed drive file header, and where its body starts."""

    header: DriveHeader
    signed: bytes
    signature: bytes

    @property
    def body_offset(self) -> int:
        return len(self.signed) + SIGNATURE_BYTES

    @property
    def full_size(self) -> int:
        """The size of the file as written."""
        return self.body_offset + sealed_size(self.header.plain_bytes, self.header.segment_bytes)

    def signed_by(self, public_key: bytes) -> bool:
        return verify_signature(public_key, self.signed, self.signature)

    def context(self) -> bytes:
        return hashlib.sha256(self.signed + self.signature).digest()


class Source(Protocol):
    """Bytes to read a drive file from: its size, and up to `length` bytes at `offset`
    (fewer only where it ends)."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...


@dataclass(frozen=True)
class BytesSource:
    """A drive file held in memory."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


def read_drive_header(source: Source) -> DriveFile:
    """The header of a drive file (not yet checked against anyone's key); reads no more
    than the preamble, the header it announces (at most MAX_HEADER_BYTES) and the
    signature."""
    preamble = source.read(0, PREAMBLE.size)
    if len(preamble) < PREAMBLE.size:
        if not MAGIC.startswith(preamble[: len(MAGIC)]):
            raise DriveFileError("not a Simpul drive file (bad magic)", 0)
        raise DriveFileError(f"file cut short inside its header ({source.size} bytes)", 0)
    magic, version, length = PREAMBLE.unpack(preamble)
    if magic != MAGIC:
        raise DriveFileError("not a Simpul drive file (bad magic)", 0)
    if version != FILE_FORMAT:
        raise DriveFileError(
            f"unsupported drive file format {version} (this node reads {FILE_FORMAT})",
            len(MAGIC),
        )
    if length > MAX_HEADER_BYTES:
        raise DriveFileError(f"header of {length} bytes exceeds {MAX_HEADER_BYTES}", len(MAGIC) + 1)
    end = PREAMBLE.size + length
    if source.size < end + SIGNATURE_BYTES:
        raise DriveFileError(f"file cut short inside its header ({source.size} bytes)", 0)
    rest = source.read(PREAMBLE.size, length + SIGNATURE_BYTES)
    if len(rest) < length + SIGNATURE_BYTES:  # the file shrank while being read
        raise DriveFileError(f"file cut short inside its header ({source.size} bytes)", 0)
    try:
        header = DriveHeader.from_bytes(rest[:length])
    except ValueError as exc:
        raise DriveFileError(str(exc), PREAMBLE.size) from None
    return DriveFile(header, preamble + rest[:length], rest[length:])


def parse_drive_file(data: bytes) -> DriveFile:
    """The header of a drive file held in memory."""
    return read_drive_header(BytesSource(data))


class DriveFileReader:
    """Decrypts and decodes one drive file's body into batches of frames, reading its
    source one segment at a time.

    Iterate `batches()`; afterwards `problem` is None for a complete, intact file, or the
    DriveFileError that stopped it (truncated, corrupted segment, bad bundle). Every batch
    handed out came from segments that authenticated, in order, before the problem.
    """

    def __init__(self, drive_file: DriveFile, source: Source, secret: bytes) -> None:
        self._file = drive_file
        self._source = source
        self._secret = secret
        self.problem: DriveFileError | None = None

    def batches(self) -> Iterator[list[Frame]]:
        header = self._file.header
        start = self._file.body_offset
        size = self._source.size
        layout = SealedLayout(header.plain_bytes, header.segment_bytes)
        segments = open_segments(
            self._secret,
            bytes.fromhex(header.nonce),
            self._file.context(),
            lambda offset, length: self._source.read(start + offset, length),
            layout,
            base=start,
        )
        decoder = BundleDecoder()
        batch: list[Frame] = []
        try:
            for index, plain in enumerate(segments, start=1):
                batch += decoder.feed(plain)
                if index % BATCH_SEGMENTS == 0 and batch:
                    yield batch
                    batch = []
            if size < self._file.full_size:
                self.problem = DriveFileError(
                    f"file cut short: {size} of {self._file.full_size} bytes",
                    size,
                    "truncated",
                )
            elif size > self._file.full_size:
                self.problem = DriveFileError(
                    "unexpected bytes after the end of the file", self._file.full_size, "corrupted"
                )
            else:
                decoder.close()
        except SegmentError as exc:
            self.problem = DriveFileError(
                f"segment {exc.index} does not authenticate (corrupted or altered)",
                exc.offset,
                "corrupted",
            )
        except BundleError as exc:
            batch += exc.frames
            self.problem = DriveFileError(
                f"bad bundle inside the file: {exc.reason}", start, "corrupted"
            )
        if batch:
            yield batch
