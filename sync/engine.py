"""The sync engine: what a peer lacks, as bundle frames; what a peer sent, verified and stored.

Sans-I/O: the engine never opens a socket or a file. A carrier (LAN session, USB drive,
hub uplink) asks `outgoing(their_frontier)` for bundle bytes and hands decoded frames to a
`Receiver` (or `ingest`), which verifies, applies and commits them (sync/receiver.py).
Trust decisions come from an injected `TrustPolicy` (sync/trust.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection, Iterable, Mapping

from simpul.sync.bundle import (
    FORMAT_VERSION,
    HEADER,
    Certificate,
    End,
    FeedChunker,
    Frame,
    Hello,
    encode_frame,
)
from simpul.sync.database import Database
from simpul.sync.feed import Checkpoint, Entry
from simpul.sync.frontier import Frontier, missing
from simpul.sync.receiver import ORIGIN_KEY_SQL, IngestReport, Receiver, Refused
from simpul.sync.refusals import chunk_digest
from simpul.sync.trust import OpenTrust, Refusal, TrustPolicy

__all__ = [
    "IngestReport",
    "OpenTrust",
    "Receiver",
    "Refusal",
    "Refused",
    "SyncEngine",
    "TrustPolicy",
]

log = logging.getLogger(__name__)

PAGE_ENTRIES = 1000  # entries read from SQLite per query while streaming out


class SyncEngine:
    """One node's side of sync, over its store; shared by every carrier."""

    def __init__(
        self,
        db: Database,
        local_origin: bytes,
        trust: TrustPolicy,
        *,
        network_id: bytes = b"",
        certificate: bytes = b"",
    ) -> None:
        self.db = db
        self.local_origin = local_origin
        self.trust = trust
        self.network_id = network_id
        self.certificate = certificate

    async def frontier(self) -> Frontier:
        rows = await self.db.fetchall("SELECT origin, seq FROM feeds")
        return Frontier({bytes(origin): seq for origin, seq in rows})

    def hello(self) -> Hello:
        return Hello(FORMAT_VERSION, self.local_origin, self.network_id)

    async def _certificate_frame(self, origin: bytes) -> Certificate | None:
        row = await self.db.fetchone(ORIGIN_KEY_SQL, (origin,))
        if row is None or row[0] is None:
            return None
        certificate = self.certificate if origin == self.local_origin else row[1]
        return Certificate(origin, row[0], certificate or b"")

    async def outgoing_frames(
        self, theirs: Mapping[bytes, int], skip: Collection[bytes] = ()
    ) -> AsyncIterator[Frame]:
        """Certificate, entries and checkpoint frames of everything `theirs` lacks, but for
        the origins in `skip` (the receiver refused their next chunk for good).

        Streams from SQLite a page at a time, so memory stays flat however much is sent.
        """
        for origin, (first, last) in sorted(missing(await self.frontier(), theirs).items()):
            if origin in skip:
                log.info(
                    "sync skip origin=%s from=%d reason=refused by the peer", origin.hex(), first
                )
                continue
            row = await self.db.fetchone(
                "SELECT max(seq) FROM checkpoints WHERE origin = ? AND seq <= ?", (origin, last)
            )
            last = row[0] if row and row[0] is not None else 0
            certificate = await self._certificate_frame(origin)
            if last < first or certificate is None:
                continue
            yield certificate
            chunker = FeedChunker()
            seq = first - 1
            sent = 0
            while seq < last:
                rows = await self.db.fetchall(
                    "SELECT e.seq, e.record_id, e.change, c.chain, c.at_ms, c.signature"
                    " FROM entries e LEFT JOIN checkpoints c USING (origin, seq)"
                    " WHERE e.origin = ? AND e.seq > ? AND e.seq <= ? ORDER BY e.seq LIMIT ?",
                    (origin, seq, last, PAGE_ENTRIES),
                )
                if not rows:
                    break
                for seq, record_id, change, chain, at_ms, signature in rows:
                    checkpoint = Checkpoint(origin, seq, chain, at_ms, signature) if chain else None
                    for frame in chunker.add(Entry(origin, seq, record_id, change), checkpoint):
                        yield frame
                sent += len(rows)
            log.info(
                "sync send origin=%s from=%d to=%d entries=%d", origin.hex(), first, last, sent
            )

    async def skipped(self, refused_at: Mapping[bytes, tuple[int, bytes]]) -> set[bytes]:
        """The origins whose chunk at the given seq is, byte for byte, the one the peer
        refused for good (`RefusalSummary.refused_at`): not worth sending again."""
        skip = set()
        for origin, (seq, digest) in refused_at.items():
            row = await self.db.fetchone(
                "SELECT seq, chain, at_ms, signature FROM checkpoints"
                " WHERE origin = ? AND seq >= ? ORDER BY seq LIMIT 1",
                (origin, seq),
            )
            if row is None:
                continue
            rows = await self.db.fetchall(
                "SELECT seq, record_id, change FROM entries"
                " WHERE origin = ? AND seq >= ? AND seq <= ? ORDER BY seq",
                (origin, seq, row[0]),
            )
            entries = [Entry(origin, s, bytes(r), bytes(c)) for s, r, c in rows]
            checkpoint = Checkpoint(origin, row[0], bytes(row[1]), row[2], bytes(row[3]))
            if chunk_digest(entries, checkpoint) == digest:
                skip.add(origin)
        return skip

    async def outgoing(self, theirs: Mapping[bytes, int]) -> AsyncIterator[bytes]:
        """A complete bundle (header, hello, what `theirs` lacks, end) as a byte stream."""
        yield HEADER + encode_frame(self.hello())
        async for frame in self.outgoing_frames(theirs):
            yield encode_frame(frame)
        yield encode_frame(End())

    def receiver(self) -> Receiver:
        """A receiving side for one incoming stream (session, file)."""
        return Receiver(self)

    async def ingest(self, frames: Iterable[Frame]) -> IngestReport:
        """Verify and commit every complete chunk in `frames`; refuse what is left over."""
        receiver = self.receiver()
        await receiver.feed(frames)
        return await receiver.finish()

    async def status(self) -> IngestReport:
        """An empty report carrying this node's current frontier and pending count."""
        row = await self.db.fetchone("SELECT count(*) FROM pending_entries WHERE refusal IS NULL")
        return IngestReport(pending=int(row[0]) if row else 0, frontier=await self.frontier())
