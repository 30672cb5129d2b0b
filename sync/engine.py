"""The sync engine: what a peer lacks, as bundle frames; what a peer sent, verified and stored.

Sans-I/O: the engine never opens a socket or a file. A carrier (LAN session, USB drive,
hub uplink) asks `outgoing(their_frontier)` for bundle bytes and hands decoded frames to a
`Receiver` (or `ingest`). Each chunk (an origin's entries up to one of its signed
checkpoints) is verified and committed in one transaction, or refused whole with a reason:
the chain must continue what this node holds, every entry must be covered by a checkpoint
whose signature verifies with the origin's key, the origin must be trusted and every change
must stay inside its write scope. Trust decisions come from an injected `TrustPolicy`.

Stored entries are applied to their record documents at once; an entry whose Automerge
dependencies have not arrived yet is kept in `pending_entries` (held, counted in the
frontier, forwarded) and applied as soon as a later chunk brings them.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiosqlite

from simpul.crypto.node_key import node_id_of, verify_signature
from simpul.sync.bundle import (
    FORMAT_VERSION,
    HEADER,
    Certificate,
    End,
    Entries,
    FeedChunker,
    Frame,
    Hello,
    encode_frame,
)
from simpul.sync.database import Database
from simpul.sync.feed import GENESIS, Checkpoint, Entry, FeedError, verify_chain
from simpul.sync.frontier import Frontier, missing
from simpul.sync.record_doc import RecordDoc, RecordDocError
from simpul.sync.store import PlannedWrite, now_ms, store_views
from simpul.sync.varint import VarintError, decode_varint

log = logging.getLogger(__name__)

PAGE_ENTRIES = 1000  # entries read from SQLite per query while streaming out
MAX_BUFFERED_BYTES = 64 * 1024 * 1024  # received changes waiting for their checkpoint
KODE_WILAYAH = "kode_wilayah"
# an origin's stored public key and certificate, as offered to the trust policy
ORIGIN_KEY_SQL = (
    "SELECT f.public_key, c.certificate FROM feeds f"
    " LEFT JOIN origin_certificates c USING (origin) WHERE f.origin = ?"
)


@dataclass(frozen=True)
class Refusal:
    """A trust policy's "no", with the reason shown to the admin."""

    reason: str


class TrustPolicy(Protocol):
    """Who may write what: the engine asks, a policy (open, or certificate-based) answers."""

    def public_key(self, origin: bytes, offered_key: bytes, certificate: bytes) -> bytes | Refusal:
        """The key that verifies `origin`'s checkpoints, judged from what the bundle (or this
        store, from an earlier bundle) offers: a raw Ed25519 key and a certificate (PEM, or
        empty for a node without a network); or why the origin is not accepted."""
        ...

    def may_write(self, origin: bytes, kode_wilayah: str) -> bool:
        """True when `origin` may author changes to a record in region `kode_wilayah`."""
        ...

    def accepts_checkpoint(self, origin: bytes, at_ms: int) -> bool:
        """False for a checkpoint signed after the origin's revocation cut-off."""
        ...


class OpenTrust:
    """Accepts any origin whose raw public key hashes to its node id; no scope, no revocation.

    For nodes that have not joined a network yet, and for tests.
    """

    def public_key(self, origin: bytes, offered_key: bytes, certificate: bytes) -> bytes | Refusal:
        if node_id_of(offered_key) != origin:
            return Refusal("the offered public key does not belong to this origin")
        return offered_key

    def may_write(self, origin: bytes, kode_wilayah: str) -> bool:
        return True

    def accepts_checkpoint(self, origin: bytes, at_ms: int) -> bool:
        return True


@dataclass(frozen=True)
class Refused:
    """Entries not accepted: from `seq` on, `count` of them, for `reason` (a short key such
    as `chain`, `scope`, `untrusted`, `gap`), with a human `detail`."""

    origin: bytes
    seq: int
    reason: str
    detail: str
    count: int = 1


@dataclass
class IngestReport:
    """What ingesting some frames did, and this node's frontier afterwards."""

    accepted: int = 0  # entries newly stored in feeds
    applied: int = 0  # changes applied to records (including formerly pending ones)
    skipped: int = 0  # entries already held
    pending: int = 0  # entries stored but waiting for Automerge deps, in the whole store
    refused: list[Refused] = field(default_factory=list)
    frontier: Frontier = field(default_factory=Frontier)

    def reasons(self) -> Counter[str]:
        """Refused entries counted per reason."""
        counts: Counter[str] = Counter()
        for refused in self.refused:
            counts[refused.reason] += refused.count
        return counts

    def merge(self, later: IngestReport) -> IngestReport:
        """This report followed by `later` (whose store-wide facts are the newer)."""
        return IngestReport(
            self.accepted + later.accepted,
            self.applied + later.applied,
            self.skipped + later.skipped,
            later.pending,
            self.refused + later.refused,
            later.frontier,
        )


class ChunkRefused(Exception):
    """Raised inside a chunk's transaction to roll all of it back."""

    def __init__(self, refused: Refused) -> None:
        super().__init__(refused.detail)
        self.refused = refused


class _OutOfBounds(Exception):
    """A change its origin was not allowed to make (scope, or authored by another actor)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def change_actor(raw_change: bytes) -> bytes:
    """The actor id of a raw Automerge change chunk (after its deps in the chunk header)."""
    try:
        _, pos = decode_varint(raw_change, 9)  # magic, checksum, chunk type, then length
        deps, pos = decode_varint(raw_change, pos)
        size, pos = decode_varint(raw_change, pos + 32 * deps)
    except VarintError:
        return b""
    return raw_change[pos : pos + size]


def _kode(doc: RecordDoc) -> str:
    return str(doc.plain().get(KODE_WILAYAH) or "")


class _Applier:
    """Applies stored entries to their record documents inside one write transaction."""

    def __init__(self, conn: aiosqlite.Connection, trust: TrustPolicy) -> None:
        self._conn = conn
        self._trust = trust
        # record id -> bytes that load to the current document, and that document
        self._docs: dict[bytes, tuple[bytes, RecordDoc]] = {}
        self._absent: set[bytes] = set()  # prefetched and not in the store
        self._touched: set[bytes] = set()

    async def prefetch(self, record_ids: set[bytes]) -> None:
        """Load the documents of a chunk's records in a few queries instead of one each."""
        wanted = [r for r in record_ids if r not in self._docs]
        for start in range(0, len(wanted), PAGE_ENTRIES):
            ids = {str(uuid.UUID(bytes=r)): r for r in wanted[start : start + PAGE_ENTRIES]}
            marks = ",".join("?" * len(ids))
            sql = f"SELECT id, doc FROM record_bodies WHERE id IN ({marks})"
            async with self._conn.execute(sql, list(ids)) as cursor:
                async for rid, data in cursor:
                    self._docs[ids[rid]] = (data, RecordDoc.load(data))
            self._absent.update(r for r in ids.values() if r not in self._docs)

    async def _current(self, record_id: bytes) -> tuple[bytes, RecordDoc] | None:
        if record_id in self._absent:
            return None
        if record_id not in self._docs:
            sql = "SELECT doc FROM record_bodies WHERE id = ?"
            async with self._conn.execute(sql, (str(uuid.UUID(bytes=record_id)),)) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return None
            self._docs[record_id] = (row[0], RecordDoc.load(row[0]))
        return self._docs[record_id]

    async def apply(self, entry: Entry) -> bool:
        """Apply `entry`'s change; False when its deps are missing (it stays pending).
        Raises _OutOfBounds for a change its origin may not make."""
        actor = change_actor(entry.change)
        if actor != entry.origin:
            raise _OutOfBounds(
                "actor", f"change authored by actor {actor.hex()}, not by its origin"
            )
        current = await self._current(entry.record_id)
        data = (current[0] if current else b"") + entry.change
        try:
            doc = RecordDoc.load(data)
        except RecordDocError:  # its Automerge deps have not arrived
            return False
        for kode in ([_kode(current[1])] if current else []) + [_kode(doc)]:
            if not self._trust.may_write(entry.origin, kode):
                raise _OutOfBounds("scope", f"record in region {kode!r} is outside its scope")
        self._docs[entry.record_id] = (data, doc)
        self._absent.discard(entry.record_id)
        self._touched.add(entry.record_id)
        return True

    async def store(self) -> None:
        """Refresh the records/record_bodies/persons rows of every changed record."""
        writes = [
            PlannedWrite(str(uuid.UUID(bytes=rid)), self._docs[rid][1], [])
            for rid in sorted(self._touched)
        ]
        await store_views(self._conn, writes, now_ms())


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

    async def outgoing_frames(self, theirs: Mapping[bytes, int]) -> AsyncIterator[Frame]:
        """Certificate, entries and checkpoint frames of everything `theirs` lacks.

        Streams from SQLite a page at a time, so memory stays flat however much is sent.
        """
        for origin, (first, last) in sorted(missing(await self.frontier(), theirs).items()):
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
        report = await receiver.receive(frames)
        return report.merge(await receiver.finish())

    async def status(self) -> IngestReport:
        """An empty report carrying this node's current frontier and pending count."""
        row = await self.db.fetchone("SELECT count(*) FROM pending_entries WHERE refusal IS NULL")
        return IngestReport(pending=int(row[0]) if row else 0, frontier=await self.frontier())


@dataclass
class _Run:
    """Received entries of one origin waiting for the checkpoint that covers them."""

    entries: list[Entry] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    size: int = 0


class Receiver:
    """The receiving side of one stream: feed it frames as they are decoded.

    Entries frames are buffered per origin until the checkpoint that covers them arrives;
    then that chunk is verified and committed in one transaction, or refused whole.
    """

    def __init__(self, engine: SyncEngine) -> None:
        self._engine = engine
        self._offers: dict[bytes, Certificate] = {}
        self._keys: dict[bytes, bytes | Refusal] = {}
        self._runs: dict[bytes, _Run] = {}
        self._buffered = 0
        self.peer: Hello | None = None
        self.their_frontier: Frontier | None = None
        self._transaction: contextlib.AsyncExitStack | None = None
        self._conn: aiosqlite.Connection | None = None

    async def receive(self, frames: Iterable[Frame]) -> IngestReport:
        """Take frames in stream order; commit each chunk a checkpoint completes.

        Every chunk these frames complete goes into one transaction, each chunk under a
        savepoint of its own: a refused chunk rolls back alone, and a stream of many small
        chunks (one per edit) costs one commit per call, not one per edit."""
        report = IngestReport()
        async with contextlib.AsyncExitStack() as stack:
            self._transaction = stack
            try:
                for frame in frames:
                    if isinstance(frame, Hello):
                        self.peer = frame
                    elif isinstance(frame, Certificate):
                        self._offers[frame.origin] = frame
                        self._keys.pop(frame.origin, None)
                    elif isinstance(frame, Frontier):
                        self.their_frontier = frame
                    elif isinstance(frame, Entries):
                        self._buffer(frame, report)
                    elif isinstance(frame, Checkpoint):
                        await self._close_chunk(frame, report)
            finally:
                self._transaction = None
                self._conn = None
        return report.merge(await self._engine.status())

    async def _connection(self) -> aiosqlite.Connection:
        """The write transaction of the current `receive` call, begun on first use."""
        if self._conn is None:
            assert self._transaction is not None
            self._conn = await self._transaction.enter_async_context(self._engine.db.write())
        return self._conn

    async def finish(self) -> IngestReport:
        """The stream has ended: entries still waiting for a checkpoint are refused."""
        report = IngestReport()
        for origin, run in self._runs.items():
            if run.entries:
                self._refuse(
                    report,
                    Refused(
                        origin,
                        run.entries[0].seq,
                        "uncovered",
                        "entries not followed by a checkpoint that covers them",
                        len(run.entries),
                    ),
                )
        self._runs.clear()
        self._buffered = 0
        return report.merge(await self._engine.status())

    def _refuse(self, report: IngestReport, refused: Refused) -> None:
        log.warning(
            "sync refuse origin=%s seq=%d count=%d reason=%s detail=%r",
            refused.origin.hex(),
            refused.seq,
            refused.count,
            refused.reason,
            refused.detail,
        )
        report.refused.append(refused)

    def _drop(self, origin: bytes) -> _Run:
        run = self._runs.pop(origin, _Run())
        self._buffered -= run.size
        return run

    def _buffer(self, frame: Entries, report: IngestReport) -> None:
        run = self._runs.setdefault(frame.origin, _Run())
        entries = frame.feed_entries()
        if not entries:
            return
        if run.entries and frame.first_seq != run.entries[-1].seq + 1:
            dropped = self._drop(frame.origin)
            self._refuse(
                report,
                Refused(
                    frame.origin,
                    frame.first_seq,
                    "order",
                    f"entries frame starts at seq {frame.first_seq}, "
                    f"not right after {dropped.entries[-1].seq}",
                    len(dropped.entries) + len(entries),
                ),
            )
            return
        size = sum(len(e.change) for e in entries)
        if self._buffered + size > MAX_BUFFERED_BYTES:
            dropped = self._drop(frame.origin)
            self._refuse(
                report,
                Refused(
                    frame.origin,
                    (dropped.entries or entries)[0].seq,
                    "oversized",
                    f"more than {MAX_BUFFERED_BYTES} bytes of entries without a checkpoint",
                    len(dropped.entries) + len(entries),
                ),
            )
            return
        run.entries += entries
        run.size += size
        self._buffered += size

    async def _close_chunk(self, checkpoint: Checkpoint, report: IngestReport) -> None:
        run = self._runs.get(checkpoint.origin)
        if run is None or not run.entries or checkpoint.seq < run.entries[0].seq:
            return  # a checkpoint of entries this stream did not carry: nothing to commit
        run.checkpoints.append(checkpoint)
        if checkpoint.seq > run.entries[-1].seq:
            return  # covers entries still to come
        cut = checkpoint.seq - run.entries[0].seq + 1
        chunk, run.entries = run.entries[:cut], run.entries[cut:]
        checkpoints = run.checkpoints
        run.checkpoints = [c for c in checkpoints if c.seq > checkpoint.seq]
        size = sum(len(e.change) for e in chunk)
        run.size -= size
        self._buffered -= size
        conn = await self._connection()
        await conn.execute("SAVEPOINT chunk")
        try:
            await self._commit(conn, chunk, checkpoints, report)
        except ChunkRefused as exc:
            await conn.execute("ROLLBACK TO chunk")
            self._refuse(report, exc.refused)
        await conn.execute("RELEASE chunk")

    async def _key(self, conn: aiosqlite.Connection, origin: bytes) -> bytes | Refusal:
        if origin not in self._keys:
            offer = self._offers.get(origin)
            if offer is None:
                async with conn.execute(ORIGIN_KEY_SQL, (origin,)) as cursor:
                    row = await cursor.fetchone()
                if row is not None and row[0] is not None:
                    offer = Certificate(origin, row[0], row[1] or b"")
            self._keys[origin] = (
                Refusal("no public key or certificate offered for this origin")
                if offer is None
                else self._engine.trust.public_key(origin, offer.public_key, offer.certificate)
            )
        return self._keys[origin]

    async def _commit(
        self,
        conn: aiosqlite.Connection,
        chunk: list[Entry],
        checkpoints: list[Checkpoint],
        report: IngestReport,
    ) -> None:
        """Verify, store and apply one chunk; raise ChunkRefused to roll it all back."""
        origin = chunk[0].origin
        async with conn.execute("SELECT seq, chain FROM feeds WHERE origin = ?", (origin,)) as c:
            row = await c.fetchone()
        held, chain = (row[0], row[1]) if row else (0, GENESIS)
        fresh = [e for e in chunk if e.seq > held]
        report.skipped += len(chunk) - len(fresh)
        if not fresh:
            return

        def refuse(reason: str, detail: str, seq: int = fresh[0].seq) -> ChunkRefused:
            return ChunkRefused(Refused(origin, seq, reason, detail, len(fresh)))

        if origin == self._engine.local_origin:
            raise refuse("own-feed", f"entries of this node's own feed past its head {held}")
        if fresh[0].seq != held + 1:
            raise refuse("gap", f"this node holds up to seq {held}")
        key = await self._key(conn, origin)
        if isinstance(key, Refusal):
            raise refuse("untrusted", key.reason)
        try:
            verify_chain(fresh, checkpoints, key, verify_signature, held + 1, chain)
        except FeedError as exc:
            raise refuse("chain", exc.reason) from None
        covering = [c for c in checkpoints if fresh[0].seq <= c.seq <= fresh[-1].seq]
        for checkpoint in covering:
            if not self._engine.trust.accepts_checkpoint(origin, checkpoint.at_ms):
                raise refuse("revoked", f"checkpoint signed at {checkpoint.at_ms} ms refused")
        applier = _Applier(conn, self._engine.trust)
        await applier.prefetch({entry.record_id for entry in fresh})
        pending = []
        for entry in fresh:
            try:
                if not await applier.apply(entry):
                    pending.append((origin, entry.seq, entry.record_id))
            except _OutOfBounds as exc:
                raise refuse(exc.reason, exc.detail, entry.seq) from None
        await self._store(conn, fresh, covering, pending)
        await self._retry_pending(conn, applier, report)
        await applier.store()
        report.accepted += len(fresh)
        report.applied += len(fresh) - len(pending)
        log.info(
            "sync accept origin=%s from=%d to=%d pending=%d",
            origin.hex(),
            fresh[0].seq,
            fresh[-1].seq,
            len(pending),
        )

    async def _store(
        self,
        conn: aiosqlite.Connection,
        fresh: list[Entry],
        covering: list[Checkpoint],
        pending: list[tuple[bytes, int, bytes]],
    ) -> None:
        origin = fresh[0].origin
        key = self._keys[origin]
        await conn.executemany(
            "INSERT INTO entries (origin, seq, record_id, change) VALUES (?, ?, ?, ?)",
            [(e.origin, e.seq, e.record_id, e.change) for e in fresh],
        )
        await conn.executemany(
            "INSERT OR IGNORE INTO checkpoints (origin, seq, chain, at_ms, signature)"
            " VALUES (?, ?, ?, ?, ?)",
            [(c.origin, c.seq, c.chain, c.at_ms, c.signature) for c in covering],
        )
        await conn.execute(
            "INSERT INTO feeds (origin, seq, chain, public_key) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (origin) DO UPDATE SET seq = excluded.seq, chain = excluded.chain,"
            " public_key = excluded.public_key",
            (origin, covering[-1].seq, covering[-1].chain, key),
        )
        offer = self._offers.get(origin)
        if offer is not None and offer.certificate:
            await conn.execute(
                "INSERT INTO origin_certificates (origin, certificate) VALUES (?, ?)"
                " ON CONFLICT (origin) DO UPDATE SET certificate = excluded.certificate",
                (origin, offer.certificate),
            )
        await conn.executemany(
            "INSERT INTO pending_entries (origin, seq, record_id) VALUES (?, ?, ?)", pending
        )

    async def _retry_pending(
        self, conn: aiosqlite.Connection, applier: _Applier, report: IngestReport
    ) -> None:
        """Apply every pending entry whose deps are now present, until none more applies."""
        sql = (
            "SELECT p.origin, p.seq, p.record_id, e.change FROM pending_entries p"
            " JOIN entries e USING (origin, seq) WHERE p.refusal IS NULL ORDER BY p.origin, p.seq"
        )
        async with conn.execute(sql) as cursor:
            waiting = [Entry(*row) async for row in cursor]
        progress = True
        while waiting and progress:
            progress = False
            still = []
            for entry in waiting:
                try:
                    applied = await applier.apply(entry)
                except _OutOfBounds as exc:
                    self._refuse(report, Refused(entry.origin, entry.seq, exc.reason, exc.detail))
                    await conn.execute(
                        "UPDATE pending_entries SET refusal = ? WHERE origin = ? AND seq = ?",
                        (f"{exc.reason}: {exc.detail}", entry.origin, entry.seq),
                    )
                    continue
                if not applied:
                    still.append(entry)
                    continue
                progress = True
                report.applied += 1
                await conn.execute(
                    "DELETE FROM pending_entries WHERE origin = ? AND seq = ?",
                    (entry.origin, entry.seq),
                )
            waiting = still
