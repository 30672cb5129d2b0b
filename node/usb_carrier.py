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

House photos travel after the records, sealed under the data key in the drive's `foto/`
folder (node/usb_photos.py).

The drive's frontier (what its files hold) is rebuilt from the signed headers of the
files that read completely (and of those under a key this node lacks), so a damaged
file's entries are written again by the next node that holds them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
    file_name,
    write_atomic,
)
from simpul.node.usb_photos import leave_photos, take_photos
from simpul.sync.bundle import Certificate, Checkpoint, Entries, Frame
from simpul.sync.drive_file import (
    DriveFile,
    DriveFileError,
    DriveFileReader,
    build_drive_file,
    parse_drive_file,
)
from simpul.sync.engine import IngestReport
from simpul.sync.frontier import Frontier
from simpul.sync.store import now_ms

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
COUNTED = ("imported", "held", "unknown-key")  # files whose signed ranges the drive holds


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


def _drive_frontier(judged: list[tuple[Path, DriveFile, str]]) -> Frontier:
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
        progress: Progress | None,
        max_file_bytes: int,
    ) -> None:
        self.node = node
        self.membership = membership
        self.drive = drive
        self.network_id = membership.network_id
        self.progress = progress or (lambda _text: None)
        self.engine, self.policy = network_engine(node, membership)
        self.report = UsbReport(str(drive.root), self.network_id)
        self.max_file_bytes = max_file_bytes
        # the drive's files with a header this node could judge, and their status
        self._judged: list[tuple[Path, DriveFile, str]] = []

    def _take_news(self) -> None:
        offered = self.drive.news(self.network_id)
        if offered is None:
            return
        updated = network_gossip.absorb(self.node.data_dir, self.membership, offered)
        if updated is not None:
            self.membership = updated
            self.policy.revocations = updated.revocations

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
        self, path: Path, frontier: Frontier
    ) -> tuple[FileReport, DriveFile | None]:
        report = FileReport(path.name, "imported")
        data = await asyncio.to_thread(path.read_bytes)
        try:
            drive_file = parse_drive_file(data)
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
        reader = DriveFileReader(drive_file, data, key.secret)
        receiver = self.engine.receiver()
        ingest = IngestReport()
        for batch in reader.batches():
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
        self._take_news()
        self.report.other_networks = [n for n in self.drive.networks() if n != self.network_id]
        self.drive.remove_temporaries(self.network_id)
        files = self.drive.files(self.network_id)
        for number, path in enumerate(files, start=1):
            self.progress(f"membaca berkas {number} dari {len(files)}")
            file_report, drive_file = await self._read_file(path, await self.engine.frontier())
            self.report.files.append(file_report)
            self.report.imported += file_report.accepted
            log.info(
                "usb read file=%s status=%s accepted=%d detail=%r",
                path.name,
                file_report.status,
                file_report.accepted,
                file_report.detail,
            )
            if drive_file is not None:
                self._judged.append((path, drive_file, file_report.status))
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
        folder = self.drive.prepare(self.network_id)
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
            await asyncio.to_thread(write_atomic, folder / name, data, keep_free)
            written = parse_drive_file(data)
            self._judged.append((folder / name, written, "imported"))
            entries = written.header.entries
            self.report.written.append(name)
            self.report.written_entries += entries
            log.info("usb write file=%s entries=%d bytes=%d", name, entries, len(data))
        news = network_gossip.export(self.node.data_dir, self.membership)
        if self.drive.news(self.network_id) != news:
            await asyncio.to_thread(write_atomic, folder / NEWS, news, keep_free)

    async def compact(self, keep_free: float) -> None:
        """Rewrite the drive's files as new ones holding everything this node holds, then
        remove the old files that read completely and whose entries the new ones carry."""
        old = [(p, f) for p, f, status in self._judged if status in ("imported", "held")]
        await self.write(Frontier(), keep_free)
        mine = await self.engine.frontier()
        for path, drive_file in old:
            spans = drive_file.header.frontier().items()
            if all(mine.get(origin, 0) >= last for origin, (_, last) in spans):
                await asyncio.to_thread(path.unlink)
                self._judged = [j for j in self._judged if j[0] != path]
                self.report.removed.append(path.name)
                log.info("usb compact removed file=%s", path.name)

    async def manifest(self, frontier: Frontier) -> None:
        files = self.drive.files(self.network_id)
        facts = {
            "frontier": {origin.hex(): seq for origin, seq in sorted(frontier.items())},
            "files": len(files),
            "bytes": sum(p.stat().st_size for p in files),
            "updated_ms": now_ms(),
            "updated_by": self.node.node_id,
        }
        await asyncio.to_thread(self.drive.write_manifest, self.network_id, facts)


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
    sync = DriveSync(node, membership, Drive(path), progress, max_file_bytes)
    drive_frontier = await sync.read()
    folder = sync.drive.prepare(sync.network_id)
    taken = await take_photos(node.photos, sync.membership.data_keys, folder)
    sync.report.photos_taken, sync.report.photos_refused = taken.taken, taken.refused
    if compact:
        await sync.compact(keep_free)
    else:
        await sync.write(drive_frontier, keep_free)
    await sync.manifest(sync.drive_frontier())
    keys, current = sync.membership.data_keys, sync.membership.data_key
    left = await leave_photos(node.photos, keys, current, folder, keep_free)
    sync.report.photos_written = left.written
    return sync.report
