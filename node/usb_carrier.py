"""The USB carrier: sync this node with a courier's drive, both ways.

`sync_drive` first takes the network news the drive carries (revocations, rotated data
keys), then reads every drive file of this node's network, oldest first, and imports
what verifies; then writes what the drive lacks as new files, updates the drive's news
and manifest. Each file is judged before any of it is imported:

| status | meaning |
| --- | --- |
| `imported` / `held` | read completely; new entries were stored / all were held already |
| `truncated` | the file ends early: its complete, verified part was imported |
| `corrupted` | a segment does not authenticate: the part before it was imported |
| `unreadable` | not a drive file, or its header is damaged |
| `other-network` | written for another network |
| `untrusted-writer` / `bad-signature` | not signed by a member of this network |
| `revoked-writer` | written by a node after its revocation |
| `unknown-key` | encrypted with a data key this node never had |
| `refused` | not a regular file (a link, FIFO, device or folder), or too large: never opened |

A drive is untrusted input (node/usb_drive.py): every path under `SIMPUL/` is checked
before use, and each one that is not what belongs there (also the manifest, the news
file, a temporary) is one `refused` line in the report, named by its path on the drive.
Drive files are streamed, a batch of segments at a time; every read and write of the
drive runs in a worker thread and a drive that does not answer within `STALL_SECONDS`
ends the sync with `DriveStalled`, so the USB status never stays "berjalan".

House photos travel after the records, sealed under the data key in the drive's `foto/`
folder (node/usb_photos.py).

The drive's frontier (what its files hold) is rebuilt from the signed headers of the
files that read completely (and of those under a key this node lacks), so a damaged
file's entries are written again by the next node that holds them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from simpul.crypto.data_key import DataKey
from simpul.crypto.node_certificate import CertificateRejected, verify_node_certificate
from simpul.node import network_gossip
from simpul.node.membership import Membership, MembershipError, load_membership
from simpul.node.runtime import Node
from simpul.node.trust_policy import network_engine
from simpul.node.usb_drive import (
    DEFAULT_KEEP_FREE,
    MAX_FILE_BYTES,
    NEWS,
    Drive,
    DriveFolder,
    DriveSource,
    PathRefused,
    drive_file_names,
    file_name,
    networks,
    read_manifest,
    write_manifest,
)
from simpul.node.usb_photos import leave_photos, take_photos
from simpul.sync.bundle import Certificate, Checkpoint, Entries, Frame
from simpul.sync.drive_file import (
    DriveFile,
    DriveFileError,
    DriveFileReader,
    build_drive_file,
    parse_drive_file,
    read_drive_header,
)
from simpul.sync.engine import IngestReport
from simpul.sync.frontier import Frontier
from simpul.sync.store import now_ms

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
COUNTED = ("imported", "held", "unknown-key")  # files whose signed ranges the drive holds
STALL_SECONDS = 60.0  # one read or write of the drive that takes longer ends the sync
T = TypeVar("T")


class DriveStalled(OSError):
    """The drive did not answer in time (a hung or failing device)."""


async def drive_io(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` on the drive, in a worker thread, bounded by STALL_SECONDS."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(call, *args), STALL_SECONDS)
    except TimeoutError:
        raise DriveStalled(
            errno.ETIMEDOUT, f"the drive did not answer within {STALL_SECONDS:g} s; unplug it"
        ) from None


@dataclass
class FileReport:
    """What reading one drive file did."""

    name: str
    status: str
    detail: str = ""
    offset: int | None = None
    writer: str = ""
    accepted: int = 0
    refused: list[str] = field(default_factory=list)


@dataclass
class UsbReport:
    """The outcome of one drive sync."""

    drive: str
    network: str
    files: list[FileReport] = field(default_factory=list)
    imported: int = 0
    written: list[str] = field(default_factory=list)
    written_entries: int = 0
    removed: list[str] = field(default_factory=list)
    other_networks: list[str] = field(default_factory=list)
    photos_taken: int = 0
    photos_refused: int = 0
    photos_written: int = 0
    error: str = ""

    @property
    def problems(self) -> list[FileReport]:
        return [f for f in self.files if f.status not in ("imported", "held") or f.refused]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "problems": len(self.problems)}


def _drive_frontier(judged: list[tuple[str, DriveFile, str]]) -> Frontier:
    """The highest seq per origin that the drive's counted files hold without a hole."""
    ranges: dict[bytes, list[tuple[int, int]]] = {}
    for _, drive_file, status in judged:
        if status in COUNTED:
            for origin, span in drive_file.header.frontier().items():
                ranges.setdefault(origin, []).append(span)
    held = {}
    for origin, spans in ranges.items():
        seq = 0
        for first, last in sorted(spans):
            if first > seq + 1:
                break
            seq = max(seq, last)
        held[origin] = seq
    return Frontier(held)


class DriveSync:
    """One sync of one drive by one node (a member of a network)."""

    def __init__(
        self,
        node: Node,
        membership: Membership,
        drive: Drive,
        folders: tuple[DriveFolder, DriveFolder],
        progress: Progress | None,
        max_file_bytes: int,
    ) -> None:
        self.node = node
        self.membership = membership
        self.drive = drive
        self.simpul, self.folder = folders  # SIMPUL/ and SIMPUL/<network id>/, held open
        self.network_id = membership.network_id
        self.progress = progress or (lambda _text: None)
        self.engine, self.policy = network_engine(node, membership)
        self.report = UsbReport(str(drive.root), self.network_id)
        self.max_file_bytes = max_file_bytes
        # the drive's files with a header this node could judge, and their status
        self._judged: list[tuple[str, DriveFile, str]] = []

    def _refused(self, refusal: PathRefused) -> None:
        """One line in the report per refused path (a path met twice is reported once)."""
        if any(f.name == refusal.path and f.status == "refused" for f in self.report.files):
            return
        self.report.files.append(FileReport(refusal.path, "refused", refusal.reason))
        log.warning("usb path refused path=%s reason=%r", refusal.path, refusal.reason)

    async def _take_news(self) -> None:
        try:
            offered = await drive_io(self.folder.read_small, NEWS, network_gossip.MAX_NEWS_BYTES)
        except PathRefused as exc:
            self._refused(exc)
            return
        if offered is None:
            return
        taken = network_gossip.absorb(self.node.data_dir, self.membership, offered)
        if taken.refused:
            self._refused(PathRefused(self.folder.path(NEWS), "; ".join(taken.refused)))
        if taken.membership is not None:
            self.membership = taken.membership
            self.policy.revocations = taken.membership.revocations

    def _writer_refusal(self, drive_file: DriveFile) -> tuple[str, str] | None:
        """Why the file's writer is not accepted, or None."""
        header = drive_file.header
        created = datetime.fromtimestamp(header.created_ms / 1000, UTC)
        try:
            certificate = verify_node_certificate(
                header.certificate.encode(), self.membership.root_cert, now=created
            )
        except (CertificateRejected, ValueError) as exc:
            return "untrusted-writer", f"writer certificate refused: {exc}"
        if certificate.node_id != header.writer:
            return "untrusted-writer", "the certificate belongs to another node than the writer"
        if not drive_file.signed_by(certificate.public_key):
            return "bad-signature", "the file header's signature does not verify"
        if self.membership.revocations.is_revoked(header.writer, at=created):
            return "revoked-writer", (
                f"written by node {header.writer} at {created.isoformat()}, after its revocation"
            )
        return None

    def _key(self, drive_file: DriveFile) -> DataKey | None:
        header = drive_file.header
        return next(
            (
                k
                for k in self.membership.data_keys
                if k.key_id == header.key_id and k.epoch == header.epoch
            ),
            None,
        )

    async def _read_file(
        self, name: str, frontier: Frontier
    ) -> tuple[FileReport, DriveFile | None]:
        try:
            source = await drive_io(self.folder.open_file, name)
        except PathRefused as exc:
            return FileReport(exc.path, "refused", exc.reason), None
        try:
            return await self._read_source(name, source, frontier)
        finally:
            source.close()

    async def _read_source(
        self, name: str, source: DriveSource, frontier: Frontier
    ) -> tuple[FileReport, DriveFile | None]:
        report = FileReport(name, "imported")
        try:
            drive_file = await drive_io(read_drive_header, source)
        except DriveFileError as exc:
            report.status, report.detail, report.offset = "unreadable", exc.reason, exc.offset
            return report, None
        header = drive_file.header
        report.writer = header.writer
        if header.network != self.network_id:
            report.status, report.detail = "other-network", f"written for network {header.network}"
            return report, None
        refusal = self._writer_refusal(drive_file)
        if refusal is not None:
            report.status, report.detail = refusal
            return report, None
        key = self._key(drive_file)
        if key is None:
            report.status = "unknown-key"
            report.detail = f"encrypted with data key epoch {header.epoch} that this node lacks"
            return report, drive_file
        wanted = any(frontier.get(o, 0) < last for o, (_, last) in header.frontier().items())
        reader = DriveFileReader(drive_file, source, key.secret)
        batches = reader.batches()
        receiver = self.engine.receiver()
        ingest = IngestReport()
        while (batch := await drive_io(next, batches, None)) is not None:
            if wanted:
                await receiver.feed(batch)  # applied now, committed while the next decrypts
        if wanted:
            ingest = await receiver.finish()
        report.accepted = ingest.accepted
        report.refused = [f"{r.reason}: {r.detail} ({r.count} entries)" for r in ingest.refused]
        if reader.problem is not None:
            report.status = reader.problem.kind
            report.detail, report.offset = reader.problem.reason, reader.problem.offset
        elif not ingest.accepted:
            report.status = "held"
        return report, drive_file

    async def read(self) -> Frontier:
        """Import every file of this network; the drive's frontier afterwards."""
        await self._take_news()
        found = await drive_io(networks, self.simpul)
        self.report.other_networks = [n for n in found if n != self.network_id]
        for folder in (self.simpul, self.folder):
            for refusal in await drive_io(folder.remove_temporaries):
                self._refused(refusal)
        names = await drive_io(drive_file_names, self.folder)
        for number, name in enumerate(names, start=1):
            self.progress(f"membaca berkas {number} dari {len(names)}")
            file_report, drive_file = await self._read_file(name, await self.engine.frontier())
            self.report.files.append(file_report)
            self.report.imported += file_report.accepted
            log.info(
                "usb read file=%s status=%s accepted=%d detail=%r",
                file_report.name,
                file_report.status,
                file_report.accepted,
                file_report.detail,
            )
            if drive_file is not None:
                self._judged.append((name, drive_file, file_report.status))
        return self.drive_frontier()

    def drive_frontier(self) -> Frontier:
        return _drive_frontier(self._judged)

    async def _batches(self, theirs: Frontier) -> AsyncIterator[list[Frame]]:
        """Frames of what `theirs` lacks, cut after a checkpoint once a file is big enough;
        each later file starts again with the certificate of the origin being sent."""
        frames: list[Frame] = []
        certificate: list[Frame] = []
        size = 0
        async for frame in self.engine.outgoing_frames(theirs):
            frames.append(frame)
            if isinstance(frame, Certificate):
                certificate = [frame]
            elif isinstance(frame, Entries):
                size += sum(len(change) for _, change in frame.items)
            elif isinstance(frame, Checkpoint) and size >= self.max_file_bytes:
                yield frames
                frames, size = list(certificate), 0
        if any(isinstance(f, Entries) for f in frames):
            yield frames

    async def write(self, theirs: Frontier, keep_free: float) -> None:
        """Write what `theirs` (the drive) lacks of this node's feeds as new files."""
        key = self.membership.data_key
        async for frames in self._batches(theirs):
            self.progress("menulis ke drive")
            created = now_ms()
            data = build_drive_file(
                self.engine.hello(),
                frames,
                certificate=self.membership.certificate.pem,
                key_id=key.key_id,
                epoch=key.epoch,
                secret=key.secret,
                sign=self.node.key.sign,
                created_ms=created,
            )
            name = file_name(self.node.node_id, created)
            await drive_io(self.folder.write_atomic, name, data, keep_free)
            written = parse_drive_file(data)
            self._judged.append((name, written, "imported"))
            entries = written.header.entries
            self.report.written.append(name)
            self.report.written_entries += entries
            log.info("usb write file=%s entries=%d bytes=%d", name, entries, len(data))
        news = network_gossip.export(self.node.data_dir, self.membership)
        try:
            current = await drive_io(self.folder.read_small, NEWS, network_gossip.MAX_NEWS_BYTES)
            if current != news:
                await drive_io(self.folder.write_atomic, NEWS, news, keep_free)
        except PathRefused as exc:
            self._refused(exc)

    async def compact(self, keep_free: float) -> None:
        """Rewrite the drive's files as new ones holding everything this node holds, then
        remove the old files that read completely and whose entries the new ones carry."""
        old = [(n, f) for n, f, status in self._judged if status in ("imported", "held")]
        await self.write(Frontier(), keep_free)
        mine = await self.engine.frontier()
        for name, drive_file in old:
            spans = drive_file.header.frontier().items()
            if all(mine.get(origin, 0) >= last for origin, (_, last) in spans):
                await drive_io(self.folder.unlink, name)
                self._judged = [j for j in self._judged if j[0] != name]
                self.report.removed.append(name)
                log.info("usb compact removed file=%s", name)

    def _files_bytes(self) -> tuple[int, int]:
        sizes = [self.folder.lstat(n) for n in drive_file_names(self.folder)]
        regular = [s.st_size for s in sizes if s is not None and stat.S_ISREG(s.st_mode)]
        return len(regular), sum(regular)

    async def manifest(self, frontier: Frontier) -> None:
        """Record the drive's frontier in its manifest (a cache: a refusal is reported)."""
        count, size = await drive_io(self._files_bytes)
        facts = {
            "frontier": {origin.hex(): seq for origin, seq in sorted(frontier.items())},
            "files": count,
            "bytes": size,
            "updated_ms": now_ms(),
            "updated_by": self.node.node_id,
        }
        networks, refusal = await drive_io(read_manifest, self.simpul)
        if refusal is not None:
            self._refused(refusal)
        try:
            await drive_io(write_manifest, self.simpul, {**networks, self.network_id: facts})
        except PathRefused as exc:
            self._refused(exc)


async def sync_drive(
    node: Node,
    path: Path,
    *,
    keep_free: float = DEFAULT_KEEP_FREE,
    compact: bool = False,
    progress: Progress | None = None,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> UsbReport:
    """Import what the drive at `path` carries for this node's network, then write what it
    lacks. Raises MembershipError for a node without a network, DriveFull when the drive
    has no room (what was read stays imported; the drive keeps its earlier files)."""
    membership = load_membership(node.data_dir)
    if membership is None:
        raise MembershipError(
            "this node belongs to no network: create or join one before using USB drives"
        )
    if not path.is_dir():
        raise FileNotFoundError(f"no drive or folder at {path}")
    drive = Drive(path)
    simpul = await drive_io(drive.open, True)
    try:
        folder = await drive_io(simpul.child, membership.network_id, True)
    except BaseException:
        simpul.close()
        raise
    with simpul, folder:
        sync = DriveSync(node, membership, drive, (simpul, folder), progress, max_file_bytes)
        drive_frontier = await sync.read()
        taken = await take_photos(node.photos, membership.data_keys, folder, drive_io)
        sync.report.photos_taken, sync.report.photos_refused = taken.taken, taken.refused
        if compact:
            await sync.compact(keep_free)
        else:
            await sync.write(drive_frontier, keep_free)
        await sync.manifest(sync.drive_frontier())
        keys, current = membership.data_keys, membership.data_key
        left = await leave_photos(node.photos, keys, current, folder, keep_free, drive_io)
        sync.report.photos_written = left.written
    return sync.report
