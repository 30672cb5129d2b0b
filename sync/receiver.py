"""The receiving side of sync: verify what a peer sent, apply it, commit it in batches.

A `Receiver` takes decoded bundle frames in stream order. Entries wait, per origin, for
the checkpoint that covers them; each such chunk must continue the feed this node holds
and verify against the origin's key (judged by the trust policy), or it is refused whole
with a reason: only what fails verification (chain, signature, format, an unknown origin)
refuses a chunk. An entry that verifies but which the policy refuses (outside its origin's
write scope, covered by a checkpoint signed after the origin's revocation, a change of
another actor, or one that depends on such an entry) is *held*: stored in the feed with
its reason, never applied, so the origin's chain and frontier move on and every later
entry still applies (decision 0020). Entries whose Automerge dependencies have not arrived
are stored as pending and applied once a later chunk brings them.

Speed comes from a pipeline. Chunks are verified and applied to their documents in
memory (the CPU part: Automerge and views) against the committed store plus what this
receiver has applied but not yet committed; closed batches of chunks are written in one
transaction each, on SQLite's thread, while the next chunks are applied. Every batch
records what it started from (feed heads, document bytes, the pending set); inside its
transaction those are compared with what is stored, and when anything differs (another
session or a local edit committed meanwhile) or the fast pass had doubts, the batch is
verified and applied again against the transaction's own view. Only that second pass ever
refuses a chunk, so nothing is refused or written on the strength of a stale read.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiosqlite

from simpul.crypto.node_key import verify_signature
from simpul.sync.bulk_write import RecordRows, insert_entries, write_record_rows
from simpul.sync.bundle import Certificate, Entries, Frame, Hello
from simpul.sync.database import on_thread
from simpul.sync.feed import GENESIS, Checkpoint, Entry, FeedError, change_hash, verify_chain
from simpul.sync.frontier import Frontier
from simpul.sync.ids import record_id_text
from simpul.sync.record_doc import RecordDoc, RecordDocError
from simpul.sync.refusals import FOR_GOOD, chunk_digest
from simpul.sync.store import PlannedWrite, now_ms, record_rows
from simpul.sync.trust import Refusal, TrustPolicy
from simpul.sync.varint import VarintError, decode_varint

if TYPE_CHECKING:
    from simpul.sync.engine import SyncEngine

log = logging.getLogger(__name__)

PAGE_IDS = 500  # record ids per prefetch query
MAX_BUFFERED_BYTES = 64 * 1024 * 1024  # received entries waiting for their checkpoint ...
ENTRY_OVERHEAD_BYTES = 200  # ... each counted with what holding it costs (~190 B measured)
MAX_BUFFERED_ENTRIES = 50_000  # ... and counted: each full GC pass walks every one of them
BATCH_ENTRIES = 4000  # a batch this large waits for the one being written, then goes
KODE_WILAYAH = "kode_wilayah"
YIELD_EVERY = 32  # records applied between turns given to the batch being written
# an origin's stored public key and certificate, as offered to the trust policy
ORIGIN_KEY_SQL = (
    "SELECT f.public_key, c.certificate FROM feeds f"
    " LEFT JOIN origin_certificates c USING (origin) WHERE f.origin = ?"
)
REFUSED_SQL = (
    "SELECT e.change FROM pending_entries p JOIN entries e USING (origin, seq)"
    " WHERE p.refusal IS NOT NULL"
)
WAITING_SQL = (
    "SELECT p.origin, p.seq, p.record_id, e.change FROM pending_entries p"
    " JOIN entries e USING (origin, seq) WHERE p.refusal IS NULL ORDER BY p.origin, p.seq"
)

Head = tuple[int, bytes]  # an origin's highest held seq and the chain hash there
Held = tuple[bytes, str]  # bytes that load to a record's document, and its region code


@dataclass(frozen=True)
class Refused:
    """Entries not accepted: from `seq` on, `count` of them, for `reason` (a short key such
    as `chain`, `scope`, `untrusted`, `gap`), with a human `detail`. `held` entries verified
    and are kept in the feed (the frontier moves past them) but never applied; the others
    were not stored at all."""

    origin: bytes
    seq: int
    reason: str
    detail: str
    count: int = 1
    held: bool = False


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


class _Doubt(Exception):
    """The fast pass cannot accept a chunk; the batch's transaction decides."""


class _OutOfBounds(Exception):
    """A change its origin was not allowed to make (scope, or authored by another actor)."""

    def __init__(self, seq: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.seq = seq
        self.reason = reason
        self.detail = detail


def change_header(raw_change: bytes) -> tuple[list[bytes], bytes]:
    """The dependency hashes and the actor id of a raw Automerge change chunk (([], b"")
    when the header cannot be read)."""
    try:
        _, pos = decode_varint(raw_change, 9)  # magic, checksum, chunk type, then length
        count, pos = decode_varint(raw_change, pos)
        deps = [raw_change[pos + 32 * i : pos + 32 * (i + 1)] for i in range(count)]
        size, pos = decode_varint(raw_change, pos + 32 * count)
    except VarintError:
        return [], b""
    return deps, raw_change[pos : pos + size]


def change_actor(raw_change: bytes) -> bytes:
    """The actor id of a raw Automerge change chunk (after its deps in the chunk header)."""
    return change_header(raw_change)[1]


def _held_bytes(entries: list[Entry]) -> int:
    """What buffering `entries` costs, as counted against MAX_BUFFERED_BYTES: empty changes
    are not free (a flood of them once filled the memory of a node)."""
    return sum(len(e.change) for e in entries) + ENTRY_OVERHEAD_BYTES * len(entries)


def _kode(doc: RecordDoc) -> str:
    return str(doc.value(KODE_WILAYAH) or "")


@dataclass
class _Run:
    """Received entries of one origin waiting for the checkpoint that covers them."""

    entries: list[Entry] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    size: int = 0


@dataclass(frozen=True)
class _Chunk:
    """An origin's entries up to (and with) the checkpoints that cover them."""

    origin: bytes
    entries: list[Entry]
    checkpoints: list[Checkpoint]


@dataclass
class _Batch:
    """Chunks committed together, what applying them produced, and what that assumed."""

    chunks: list[_Chunk] = field(default_factory=list)
    doubt: bool = False  # the fast pass could not decide: apply again in the transaction
    heads: dict[bytes, Head | None] = field(default_factory=dict)  # origin -> head assumed
    bases: dict[bytes, bytes | None] = field(default_factory=dict)  # record -> doc assumed
    waiting: frozenset[tuple[bytes, int]] = frozenset()  # pending entries assumed
    entries: list[Entry] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    feeds: dict[bytes, tuple[int, bytes, bytes]] = field(default_factory=dict)
    certificates: dict[bytes, bytes] = field(default_factory=dict)
    pending: list[tuple[bytes, int, bytes]] = field(default_factory=list)
    unpended: list[tuple[bytes, int]] = field(default_factory=list)
    spoiled: list[tuple[str, bytes, int]] = field(default_factory=list)  # pending refused
    held: list[tuple[bytes, int, bytes, str]] = field(default_factory=list)  # refused, kept
    refused_chunks: list[tuple[bytes, int, str, bytes]] = field(default_factory=list)
    rows: dict[bytes, RecordRows] = field(default_factory=dict)  # each changed record's rows
    report: IngestReport = field(default_factory=IngestReport)

    @property
    def size(self) -> int:
        return sum(len(chunk.entries) for chunk in self.chunks)


class _View:
    """The store as the next batch sees it: what `conn` reads, overlaid with what batches
    of this receiver applied and may not have committed yet."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.heads: dict[bytes, Head] = {}
        self.docs: dict[bytes, Held] = {}
        self.owner: dict[bytes, _Batch] = {}  # record -> the batch that last changed it
        self.waiting: list[Entry] | None = None  # pending entries, loaded on first need
        self.ahead: dict[bytes, Held | None] = {}  # stored documents read ahead, one call long
        self.refused: set[bytes] | None = None  # hashes of held changes, loaded on first need
        self.held: set[bytes] = set()  # hashes of changes this receiver's batches held

    async def head(self, origin: bytes) -> Head:
        if origin not in self.heads:
            sql = "SELECT seq, chain FROM feeds WHERE origin = ?"
            async with self.conn.execute(sql, (origin,)) as cursor:
                row = await cursor.fetchone()
            self.heads[origin] = (row[0], row[1]) if row else (0, GENESIS)
        return self.heads[origin]

    async def waiting_entries(self) -> list[Entry]:
        if self.waiting is None:
            async with self.conn.execute(WAITING_SQL) as cursor:
                self.waiting = [Entry(*row) async for row in cursor]
        return self.waiting

    async def refused_hashes(self) -> set[bytes]:
        """The Automerge hashes of every held (refused) change: stored, or held by a batch
        of this receiver that may not have committed yet."""
        if self.refused is None:
            async with self.conn.execute(REFUSED_SQL) as cursor:
                self.refused = {change_hash(row[0]) async for row in cursor}
        return self.refused | self.held

    async def read_ahead(self, record_ids: Iterable[bytes]) -> None:
        """Read the documents a call's frames will need in a few queries, not one per chunk."""
        self.ahead.update(await self.read_docs(record_ids))

    async def read_docs(self, record_ids: Iterable[bytes]) -> dict[bytes, Held | None]:
        """The document of each record as this view sees it now. A record changed by an
        uncommitted batch is taken from that batch: the batch may commit (and the view
        forget the record) while the caller still uses what it read."""
        found: dict[bytes, Held | None] = {}
        wanted = []
        for record_id in set(record_ids):
            if record_id in self.docs:
                found[record_id] = self.docs[record_id]
            elif record_id in self.ahead:
                found[record_id] = self.ahead[record_id]
            else:
                wanted.append(record_id)
                found[record_id] = None
        for start in range(0, len(wanted), PAGE_IDS):
            ids = {record_id_text(r): r for r in wanted[start : start + PAGE_IDS]}
            sql = (
                "SELECT b.id, b.doc, r.kode_wilayah FROM record_bodies b JOIN records r"
                f" USING (id) WHERE b.id IN ({','.join('?' * len(ids))})"
            )
            async with self.conn.execute(sql, list(ids)) as cursor:
                async for rid, data, kode in cursor:
                    found[ids[rid]] = (data, kode)
        return found

    def forget(self, batch: _Batch) -> None:
        """`batch` is committed: what it changed is read from the store from now on."""
        for record_id in batch.rows:
            if self.owner.get(record_id) is batch:
                del self.owner[record_id]
                del self.docs[record_id]


class _Applier:
    """Applies one chunk's (or the pending entries') changes on top of a view, keeping
    the new documents apart until the caller takes them. Entries its trust policy refuses
    are held (see the module docstring), not applied."""

    def __init__(self, view: _View, trust: TrustPolicy, batch: _Batch) -> None:
        self._view = view
        self._trust = trust
        self._batch = batch
        self._stored: dict[bytes, Held | None] = {}
        self.changed: dict[bytes, Held] = {}
        self._docs: dict[bytes, RecordDoc] = {}  # the changed documents, until kept
        self._allowed: dict[tuple[bytes, str], bool] = {}  # (origin, region) -> may write
        self.held: list[tuple[Entry, str, str]] = []  # (entry, reason, detail), in order
        self._held_hashes: set[bytes] = set()

    async def prefetch(self, record_ids: Iterable[bytes]) -> None:
        fresh = [r for r in record_ids if r not in self._stored]
        self._stored.update(await self._view.read_docs(fresh))

    def _current(self, record_id: bytes) -> Held | None:
        if record_id in self.changed:
            return self.changed[record_id]
        if record_id in self._view.docs:
            return self._view.docs[record_id]
        return self._stored[record_id]

    async def apply_all(
        self, entries: list[Entry], holds: dict[int, tuple[str, str]]
    ) -> list[Entry]:
        """Apply `entries` in order (holding those whose seq `holds` names, and those the
        policy refuses); those whose deps are missing, returned. Gives the event loop a turn
        now and then, so the batch being written keeps SQLite busy meanwhile."""
        missing = []
        for index, entry in enumerate(entries, 1):
            if entry.seq in holds:
                self.hold(entry, *holds[entry.seq])
            else:
                try:
                    if not self.apply(entry):
                        missing.append(entry)
                except _OutOfBounds as exc:
                    self.hold(entry, exc.reason, exc.detail)
            if index % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return missing

    def hold(self, entry: Entry, reason: str, detail: str) -> None:
        """Keep `entry` unapplied, for `reason`."""
        self.held.append((entry, reason, detail))
        self._held_hashes.add(change_hash(entry.change))

    async def hold_dependents(self, missing: list[Entry]) -> list[Entry]:
        """Hold every entry in `missing` that depends on a held change (it can never
        apply); the rest, still missing their deps."""
        if not missing:
            return missing
        refused = await self._view.refused_hashes()
        progress = True
        while progress:
            progress = False
            for entry in list(missing):
                held_dep = next(
                    (
                        d
                        for d in change_header(entry.change)[0]
                        if d in refused or d in self._held_hashes
                    ),
                    None,
                )
                if held_dep is not None:
                    missing.remove(entry)
                    self.hold(entry, "depends", f"depends on refused change {held_dep.hex()}")
                    progress = True
        return missing

    def apply(self, entry: Entry) -> bool:
        """Apply `entry`'s change; False when its deps are missing (it stays pending).
        Raises _OutOfBounds for a change its origin may not make."""
        actor = change_actor(entry.change)
        if actor != entry.origin:
            raise _OutOfBounds(
                entry.seq, "actor", f"change authored by actor {actor.hex()}, not by its origin"
            )
        current = self._current(entry.record_id)
        data = (current[0] if current else b"") + entry.change
        try:
            doc = RecordDoc.load(data)
        except RecordDocError:  # its Automerge deps have not arrived
            return False
        kode = _kode(doc)
        for region in ([current[1]] if current else []) + [kode]:
            if not self._may_write(entry.origin, region):
                raise _OutOfBounds(
                    entry.seq, "scope", f"record in region {region!r} is outside its scope"
                )
        if entry.record_id not in self._batch.bases and entry.record_id not in self.changed:
            self._batch.bases[entry.record_id] = current[0] if current else None
        self.changed[entry.record_id] = (data, kode)
        self._docs[entry.record_id] = doc
        return True

    def _may_write(self, origin: bytes, region: str) -> bool:
        if (origin, region) not in self._allowed:
            self._allowed[origin, region] = self._trust.may_write(origin, region)
        return self._allowed[origin, region]

    async def keep(self) -> None:
        """The changes are accepted: they are the view's (and the batch's) from now on,
        with the rows that show them; held entries are the batch's to store as held."""
        at = now_ms()
        for index, (record_id, held) in enumerate(self.changed.items(), 1):
            self._view.docs[record_id] = held
            self._view.owner[record_id] = self._batch
            self._batch.rows[record_id] = record_rows(
                [PlannedWrite(record_id_text(record_id), self._docs.pop(record_id), [])], at
            )
            if index % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        self._view.held |= self._held_hashes
        for entry, reason, detail in self.held:
            self._batch.held.append(
                (entry.origin, entry.seq, entry.record_id, f"{reason}: {detail}")
            )


def held_reports(held: list[tuple[Entry, str, str]]) -> list[Refused]:
    """Held entries as reports: one per run of the same origin and reason."""
    reports: list[Refused] = []
    for entry, reason, detail in held:
        last = reports[-1] if reports else None
        if last and (last.origin, last.reason) == (entry.origin, reason):
            reports[-1] = Refused(
                last.origin, last.seq, reason, last.detail, last.count + 1, held=True
            )
        else:
            reports.append(Refused(entry.origin, entry.seq, reason, detail, held=True))
    return reports


class Receiver:
    """The receiving side of one stream (session, file, upload): feed it frames.

    `receive(frames)` returns once everything those frames completed is committed.
    `feed(frames)` may leave the last batch being written while the caller reads on;
    `drain()` waits for it, and `finish()` (at the end of the stream) also refuses
    entries still waiting for a checkpoint. Both return what was done since last asked.
    """

    def __init__(self, engine: SyncEngine) -> None:
        self._engine = engine
        self._offers: dict[bytes, Certificate] = {}
        self._keys: dict[bytes, bytes | Refusal] = {}
        self._runs: dict[bytes, _Run] = {}
        self._buffered = 0
        self.peer: Hello | None = None
        self.their_frontier: Frontier | None = None
        self._view = _View(engine.db.reader)
        self._open = _Batch()
        self._writing: asyncio.Task[None] | None = None
        self._report = IngestReport()

    # ----- taking frames -----------------------------------------------------------------

    async def receive(self, frames: Iterable[Frame]) -> IngestReport:
        """Take frames in stream order; returns when every chunk they complete is stored."""
        await self.feed(frames)
        return await self.drain()

    async def feed(self, frames: Iterable[Frame]) -> None:
        """Take frames; chunks they complete are applied now and written in the background."""
        frames = list(frames)
        view = self._view
        await view.read_ahead(rid for f in frames if isinstance(f, Entries) for rid, _ in f.items)
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
                    self._buffer(frame)
                elif isinstance(frame, Checkpoint):
                    await self._close_chunk(frame)
        finally:
            view.ahead.clear()
        if self._open.chunks and (
            self._writing is None or self._writing.done() or self._open.size >= BATCH_ENTRIES
        ):
            await self._write_open()

    async def drain(self) -> IngestReport:
        """Wait until every batch is committed; what was done since last asked."""
        if self._open.chunks:
            await self._write_open()
        await self._settle()
        report, self._report = self._report, IngestReport()
        return report.merge(await self._engine.status())

    async def finish(self) -> IngestReport:
        """The stream has ended: entries still waiting for a checkpoint are refused."""
        for origin, run in self._runs.items():
            if run.entries:
                self._refuse(
                    Refused(
                        origin,
                        run.entries[0].seq,
                        "uncovered",
                        "entries not followed by a checkpoint that covers them",
                        len(run.entries),
                    ),
                    self._report,
                )
        self._runs.clear()
        self._buffered = 0
        return await self.drain()

    def _refuse(self, refused: Refused, report: IngestReport) -> None:
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

    def _buffer(self, frame: Entries) -> None:
        run = self._runs.setdefault(frame.origin, _Run())
        entries = frame.feed_entries()
        if not entries:
            return
        if run.entries and frame.first_seq != run.entries[-1].seq + 1:
            dropped = self._drop(frame.origin)
            detail = (
                f"entries frame starts at seq {frame.first_seq}, "
                f"not right after {dropped.entries[-1].seq}"
            )
            count = len(dropped.entries) + len(entries)
            self._refuse(
                Refused(frame.origin, frame.first_seq, "order", detail, count), self._report
            )
            return
        size = _held_bytes(entries)
        waiting = sum(len(r.entries) for r in self._runs.values()) + len(entries)
        if self._buffered + size > MAX_BUFFERED_BYTES or waiting > MAX_BUFFERED_ENTRIES:
            dropped = self._drop(frame.origin)
            detail = (
                f"more than {MAX_BUFFERED_ENTRIES} entries or {MAX_BUFFERED_BYTES} bytes "
                "without a checkpoint"
            )
            first = (dropped.entries or entries)[0].seq
            count = len(dropped.entries) + len(entries)
            self._refuse(Refused(frame.origin, first, "oversized", detail, count), self._report)
            return
        run.entries += entries
        run.size += size
        self._buffered += size

    async def _close_chunk(self, checkpoint: Checkpoint) -> None:
        run = self._runs.get(checkpoint.origin)
        if run is None or not run.entries or checkpoint.seq < run.entries[0].seq:
            return  # a checkpoint of entries this stream did not carry: nothing to commit
        run.checkpoints.append(checkpoint)
        if checkpoint.seq > run.entries[-1].seq:
            return  # covers entries still to come
        cut = checkpoint.seq - run.entries[0].seq + 1
        entries, run.entries = run.entries[:cut], run.entries[cut:]
        checkpoints = run.checkpoints
        run.checkpoints = [c for c in checkpoints if c.seq > checkpoint.seq]
        size = _held_bytes(entries)
        run.size -= size
        self._buffered -= size
        chunk = _Chunk(checkpoint.origin, entries, checkpoints)
        batch = self._open
        if not batch.chunks:
            batch.waiting = frozenset((e.origin, e.seq) for e in await self._view.waiting_entries())
        batch.chunks.append(chunk)
        if batch.doubt:
            return  # the transaction applies this batch anyway
        try:
            await self._apply_chunk(self._view, batch, chunk)
        except _Doubt:
            batch.doubt = True

    # ----- applying ----------------------------------------------------------------------

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

    async def _apply_chunk(self, view: _View, batch: _Batch, chunk: _Chunk) -> None:
        """Verify `chunk` against `view` and apply it there, into `batch`.

        Raises _Doubt when the chunk cannot be accepted. In the fast pass that sends the
        batch to its transaction; there (where `view` reads the transaction) the caller
        refuses the chunk with the Refused the exception carries."""
        origin = chunk.origin
        held, chain = await view.head(origin)
        batch.heads.setdefault(origin, (held, chain))
        fresh = [e for e in chunk.entries if e.seq > held]
        if not fresh:
            batch.report.skipped += len(chunk.entries)
            return

        def refuse(reason: str, detail: str, seq: int = fresh[0].seq) -> _Doubt:
            return _Doubt(Refused(origin, seq, reason, detail, len(fresh)))

        if origin == self._engine.local_origin:
            raise refuse("own-feed", f"entries of this node's own feed past its head {held}")
        if fresh[0].seq != held + 1:
            raise refuse("gap", f"this node holds up to seq {held}")
        key = await self._key(view.conn, origin)
        if isinstance(key, Refusal):
            raise refuse("untrusted", key.reason)
        try:
            verify_chain(fresh, chunk.checkpoints, key, verify_signature, held + 1, chain)
        except FeedError as exc:
            raise refuse("chain", exc.reason) from None
        covering = [c for c in chunk.checkpoints if fresh[0].seq <= c.seq <= fresh[-1].seq]
        applier = _Applier(view, self._engine.trust, batch)
        await applier.prefetch(e.record_id for e in fresh)
        pending = await applier.apply_all(fresh, self._revoked(origin, held, covering))
        pending = await applier.hold_dependents(pending)
        await applier.keep()
        for refused in held_reports(applier.held):
            self._refuse(refused, batch.report)
        view.heads[origin] = (covering[-1].seq, covering[-1].chain)
        batch.report.skipped += len(chunk.entries) - len(fresh)
        batch.report.accepted += len(fresh)
        batch.report.applied += len(fresh) - len(pending) - len(applier.held)
        batch.entries += fresh
        batch.checkpoints += covering
        batch.feeds[origin] = (covering[-1].seq, covering[-1].chain, key)
        offer = self._offers.get(origin)
        if offer is not None and offer.certificate:
            batch.certificates[origin] = offer.certificate
        batch.pending += [(origin, e.seq, e.record_id) for e in pending]
        waiting = await view.waiting_entries()
        waiting += pending
        if waiting and len(pending) < len(fresh):
            await self._retry_pending(view, batch, waiting)

    def _revoked(
        self, origin: bytes, held: int, covering: list[Checkpoint]
    ) -> dict[int, tuple[str, str]]:
        """The seqs covered by checkpoints the policy refuses (signed after the origin's
        revocation), each with its reason and detail."""
        holds: dict[int, tuple[str, str]] = {}
        start = held + 1
        for checkpoint in covering:
            if not self._engine.trust.accepts_checkpoint(origin, checkpoint.at_ms):
                detail = f"checkpoint signed at {checkpoint.at_ms} ms, after the revocation"
                holds.update((seq, ("revoked", detail)) for seq in range(start, checkpoint.seq + 1))
            start = checkpoint.seq + 1
        return holds

    async def _retry_pending(self, view: _View, batch: _Batch, waiting: list[Entry]) -> None:
        """Apply every pending entry whose deps are now present, until none more applies;
        pending entries that can never apply (the policy refuses them, or they depend on a
        held change) are marked refused."""
        applier = _Applier(view, self._engine.trust, batch)
        await applier.prefetch(e.record_id for e in waiting)
        progress = True
        while waiting and progress:
            progress = False
            for entry in list(waiting):
                try:
                    applied = applier.apply(entry)
                except _OutOfBounds as exc:
                    waiting.remove(entry)
                    applier.hold(entry, exc.reason, exc.detail)
                    continue
                if applied:
                    waiting.remove(entry)
                    progress = True
                    batch.report.applied += 1
                    batch.unpended.append((entry.origin, entry.seq))
        waiting[:] = await applier.hold_dependents(list(waiting))
        spoiled, applier.held = applier.held, []  # stored already: marked, not inserted
        await applier.keep()
        for entry, reason, detail in spoiled:
            batch.spoiled.append((f"{reason}: {detail}", entry.origin, entry.seq))
        for refused in held_reports(spoiled):
            self._refuse(refused, batch.report)

    # ----- writing -----------------------------------------------------------------------

    async def _write_open(self) -> None:
        """Start writing the open batch once the one before it is committed."""
        await self._settle()
        batch, self._open = self._open, _Batch()
        self._writing = asyncio.create_task(self._write(batch))

    async def _settle(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing

    async def _write(self, batch: _Batch) -> None:
        try:
            async with self._engine.db.write() as conn:
                if batch.doubt or not await on_thread(conn, lambda raw: _still_holds(raw, batch)):
                    batch = await self._again(conn, batch)
                await on_thread(conn, lambda raw: _store(raw, batch))
        except BaseException:
            self._view = _View(self._engine.db.reader)  # nothing it holds can be trusted
            raise
        self._view.forget(batch)
        self._report = self._report.merge(batch.report)

    async def _again(self, conn: aiosqlite.Connection, batch: _Batch) -> _Batch:
        """Verify and apply `batch`'s chunks once more, against the transaction itself;
        chunks refused here are refused for good."""
        log.info("sync reapply chunks=%d doubt=%s", len(batch.chunks), batch.doubt)
        self._view = _View(self._engine.db.reader)  # later batches were built on stale reads
        view = _View(conn)
        again = _Batch()
        for chunk in batch.chunks:
            attempt = _Batch(waiting=again.waiting)
            try:
                await self._apply_chunk(view, attempt, chunk)
            except _Doubt as exc:
                (refused,) = exc.args
                self._refuse(refused, again.report)
                if refused.reason in FOR_GOOD:
                    refused_entries = [e for e in chunk.entries if e.seq >= refused.seq]
                    closing = max(chunk.checkpoints, key=lambda c: c.seq)
                    digest = chunk_digest(refused_entries, closing)
                    again.refused_chunks.append(
                        (refused.origin, refused.seq, refused.reason, digest)
                    )
                continue
            _absorb(again, attempt)
        return again


def _still_holds(conn: sqlite3.Connection, batch: _Batch) -> bool:
    """True when the store still is what `batch` was applied to."""
    for origin, head in batch.heads.items():
        row = conn.execute("SELECT seq, chain FROM feeds WHERE origin = ?", (origin,)).fetchone()
        if ((row[0], row[1]) if row else (0, GENESIS)) != head:
            return False
    if frozenset((row[0], row[1]) for row in conn.execute(WAITING_SQL)) != batch.waiting:
        return False
    bases = list(batch.bases.items())
    for start in range(0, len(bases), PAGE_IDS):
        page = {record_id_text(r): base for r, base in bases[start : start + PAGE_IDS]}
        sql = f"SELECT id, doc FROM record_bodies WHERE id IN ({','.join('?' * len(page))})"
        stored = dict(conn.execute(sql, list(page)).fetchall())
        if any(stored.get(rid) != base for rid, base in page.items()):
            return False
    return True


def _store(conn: sqlite3.Connection, batch: _Batch) -> None:
    rows = RecordRows()
    for record_id in sorted(batch.rows):
        rows.extend(batch.rows[record_id])
    insert_entries(conn, batch.entries)
    conn.executemany(
        "INSERT OR IGNORE INTO checkpoints (origin, seq, chain, at_ms, signature)"
        " VALUES (?, ?, ?, ?, ?)",
        [(c.origin, c.seq, c.chain, c.at_ms, c.signature) for c in batch.checkpoints],
    )
    conn.executemany(
        "INSERT INTO feeds (origin, seq, chain, public_key) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (origin) DO UPDATE SET seq = excluded.seq, chain = excluded.chain,"
        " public_key = excluded.public_key",
        [(origin, *feed) for origin, feed in batch.feeds.items()],
    )
    conn.executemany(
        "INSERT INTO origin_certificates (origin, certificate) VALUES (?, ?)"
        " ON CONFLICT (origin) DO UPDATE SET certificate = excluded.certificate",
        list(batch.certificates.items()),
    )
    conn.executemany(
        "INSERT INTO pending_entries (origin, seq, record_id) VALUES (?, ?, ?)", batch.pending
    )
    conn.executemany("DELETE FROM pending_entries WHERE origin = ? AND seq = ?", batch.unpended)
    conn.executemany(
        "UPDATE pending_entries SET refusal = ? WHERE origin = ? AND seq = ?", batch.spoiled
    )
    conn.executemany(
        "INSERT INTO pending_entries (origin, seq, record_id, refusal) VALUES (?, ?, ?, ?)",
        batch.held,
    )
    at = now_ms()
    conn.executemany(
        "INSERT OR REPLACE INTO refused_chunks (origin, seq, reason, digest, at_ms)"
        " VALUES (?, ?, ?, ?, ?)",
        [(*refused, at) for refused in batch.refused_chunks],
    )
    conn.executemany(
        "DELETE FROM refused_chunks WHERE origin = ?", [(origin,) for origin in batch.feeds]
    )
    write_record_rows(conn, rows)
    for origin, (seq, _, _) in batch.feeds.items():
        first = min(e.seq for e in batch.entries if e.origin == origin)
        log.info("sync accept origin=%s from=%d to=%d", origin.hex(), first, seq)


def _absorb(into: _Batch, chunk: _Batch) -> None:
    """Add one chunk's accepted work to a batch rebuilt in its transaction."""
    for origin, head in chunk.heads.items():
        into.heads.setdefault(origin, head)
    for record_id, base in chunk.bases.items():
        into.bases.setdefault(record_id, base)
    into.entries += chunk.entries
    into.checkpoints += chunk.checkpoints
    into.feeds.update(chunk.feeds)
    into.certificates.update(chunk.certificates)
    into.pending += chunk.pending
    into.unpended += chunk.unpended
    into.spoiled += chunk.spoiled
    into.held += chunk.held
    into.rows.update(chunk.rows)
    into.report = into.report.merge(chunk.report)
