"""The record store: household documents, their search indexes and this node's feed.

Every write is one SQLite transaction that updates the Automerge document and its
search rows, appends the new changes to this node's hash-chained feed and signs one
checkpoint for the whole transaction, so what the API acknowledges is durable and
verifiable, and a crash leaves either all of it or none.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
from automerge import core

from simpul.crypto.scope import in_scope
from simpul.sync import duplicates
from simpul.sync.bulk_write import RecordRows, insert_entries, write_record_rows
from simpul.sync.conflicts import Path, conflicts, resolve
from simpul.sync.database import Database, on_thread
from simpul.sync.feed import GENESIS, Checkpoint, Entry, FeedError, chain_link
from simpul.sync.feed import verify_chain as verify_feed_chain
from simpul.sync.ids import new_member_id, uuid7
from simpul.sync.record_doc import MEMBERS, RecordDoc, iso_ms

Signer = Callable[[bytes], bytes]
Verifier = Callable[[bytes, bytes, bytes], bool]

TRIGRAM = 3


class RecordNotFound(Exception):
    """No record with that id (or it was deleted, for writes)."""


class RecordExists(Exception):
    """A record with the supplied id already exists."""


class OutOfScope(Exception):
    """A write to a region outside this node's write scope (other nodes would refuse it)."""

    def __init__(self, kode_wilayah: str, scope: tuple[str, ...]) -> None:
        super().__init__(
            f"region {kode_wilayah} is outside this node's write scope ({', '.join(scope)})"
        )
        self.kode_wilayah = kode_wilayah


def now_ms() -> int:
    return int(time.time() * 1000)


def _id_bytes(record_id: str) -> bytes:
    return uuid.UUID(record_id).bytes


def _view(record_id: str, doc: RecordDoc) -> dict[str, Any]:
    household, meta = doc.view()
    meta["conflicts"] = conflicts(doc)
    return {"id": record_id, **household, "_meta": meta}


@dataclass
class PlannedWrite:
    """A record state to commit: the document after its change, and the change itself."""

    record_id: str
    doc: RecordDoc
    changes: list[core.Change]


@dataclass
class ImportOutcome:
    """What one import batch did."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    persons: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def record_rows(writes: Sequence[PlannedWrite], at: int) -> RecordRows:
    """Each record's narrow row, document and person rows (CPU only: no database)."""
    rows = RecordRows()
    for write in writes:
        facts = write.doc.index_facts()
        rows.records.append(
            (
                write.record_id,
                facts.kode_wilayah,
                facts.no_kk,
                facts.status_usulan,
                at,
                int(facts.deleted),
            )
        )
        rows.bodies.append((write.record_id, write.doc.save()))
        rows.persons.extend((write.record_id, nik, nama.upper()) for nik, nama in facts.members)
    return rows


async def store_records(
    conn: aiosqlite.Connection, writes: Sequence[PlannedWrite], at: int
) -> None:
    """Write each record's narrow row, document and person rows."""
    rows = record_rows(writes, at)
    await on_thread(conn, lambda raw: write_record_rows(raw, rows))


def _viewed(record_id: str, data: bytes) -> dict[str, Any]:
    return _view(record_id, RecordDoc.load(data))


def _with_member_ids(members: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{**m, "id": m.get("id") or new_member_id()} for m in members]


def merge_import(current: Mapping[str, Any] | None, incoming: Mapping[str, Any]) -> dict:
    """Target state for an imported household: its fields win, members merge by NIK.

    Import never removes a member: a person missing from the file may have been added on
    this node, and nothing is ever lost silently.
    """
    fields = {k: v for k, v in incoming.items() if k not in ("id", MEMBERS)}
    if current is None:
        return {**fields, MEMBERS: _with_member_ids(incoming[MEMBERS])}
    members = [dict(m) for m in current.get(MEMBERS, [])]
    by_nik = {m["nik"]: m for m in members}
    for person in incoming[MEMBERS]:
        existing = by_nik.get(person["nik"])
        if existing is None:
            members.append({**person, "id": new_member_id()})
        else:
            existing.update({k: v for k, v in person.items() if k != "id"})
    return {**fields, MEMBERS: members}


class RecordStore:
    """Household records of one node, written through its signed feed."""

    def __init__(
        self,
        db: Database,
        actor: bytes,
        public_key: bytes,
        signer: Signer,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.db = db
        self.actor = actor
        self.public_key = public_key
        self._sign = signer
        self.clock = clock
        self.on_commit: Callable[[], None] | None = None  # after each commit: "sync soon"
        self.scope: tuple[str, ...] | None = None  # region prefixes; None: unrestricted

    def check_scope(self, *kodes: str | None) -> None:
        """Raise OutOfScope unless every region code (before and after a write) is ours."""
        if self.scope is None:
            return
        for kode in kodes:
            if kode is not None and not in_scope(self.scope, kode):
                raise OutOfScope(kode, self.scope)

    # ----- writing -------------------------------------------------------------------

    async def _load_docs(
        self, conn: aiosqlite.Connection, record_ids: Sequence[str]
    ) -> dict[str, tuple[RecordDoc, bool]]:
        found: dict[str, tuple[RecordDoc, bool]] = {}
        for start in range(0, len(record_ids), 500):
            chunk = record_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = (
                "SELECT r.id, b.doc, r.deleted FROM records r JOIN record_bodies b USING (id)"
                f" WHERE r.id IN ({marks})"
            )
            async with conn.execute(sql, chunk) as cursor:
                async for rid, data, deleted in cursor:
                    found[rid] = (RecordDoc.load(data, self.actor), bool(deleted))
        return found

    async def _commit(self, conn: aiosqlite.Connection, writes: Sequence[PlannedWrite]) -> None:
        """Append the changes to this node's feed, sign one checkpoint, store the records."""
        writes = [w for w in writes if w.changes]
        if not writes:
            return
        sql = "SELECT seq, chain FROM feeds WHERE origin = ?"
        async with conn.execute(sql, (self.actor,)) as cursor:
            row = await cursor.fetchone()
        seq, chain = (row[0], row[1]) if row else (0, GENESIS)
        entries = []
        for write in writes:
            rid = _id_bytes(write.record_id)
            for change in write.changes:
                seq += 1
                chain = chain_link(chain, seq, rid, change.hash)
                entries.append(Entry(self.actor, seq, rid, change.raw_bytes))
        at = self.clock()
        checkpoint = Checkpoint.sign(self.actor, seq, chain, at, self._sign)
        await on_thread(conn, lambda raw: insert_entries(raw, entries))
        await conn.execute(
            "INSERT INTO feeds (origin, seq, chain, public_key) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (origin) DO UPDATE SET seq = excluded.seq, chain = excluded.chain",
            (self.actor, seq, chain, self.public_key),
        )
        await conn.execute(
            "INSERT INTO checkpoints (origin, seq, chain, at_ms, signature) VALUES (?, ?, ?, ?, ?)",
            (checkpoint.origin, checkpoint.seq, checkpoint.chain, at, checkpoint.signature),
        )
        await store_records(conn, writes, at)
        if self.on_commit is not None:
            self.db.after_commit(self.on_commit)

    async def create(
        self,
        household: Mapping[str, Any],
        operator: str,
        record_id: str | None = None,
        refuse_duplicates: bool = False,
    ) -> dict[str, Any]:
        """Store a new household (already validated). Raises RecordExists for a taken id,
        and with `refuse_duplicates` DuplicateHousehold when another live household holds
        its No. KK or a member's NIK."""
        rid = record_id or str(uuid7())
        target = {k: v for k, v in household.items() if k != "id"}
        target[MEMBERS] = _with_member_ids(target.get(MEMBERS, []))
        async with self.db.write() as conn:
            if await self._load_docs(conn, [rid]):
                raise RecordExists(rid)
            self.check_scope(target.get("kode_wilayah"))
            if refuse_duplicates:
                await duplicates.refuse_duplicates(conn, target, rid)
            doc = RecordDoc.new(self.actor)
            changes = doc.set_state(target, operator, self.clock())
            await self._commit(conn, [PlannedWrite(rid, doc, changes)])
        return _view(rid, doc)

    async def update(
        self,
        record_id: str,
        edit: Callable[[dict[str, Any]], dict[str, Any]],
        operator: str,
        delete: bool = False,
        refuse_duplicates: bool = False,
    ) -> dict[str, Any]:
        """Apply `edit` (current household -> target household) as one change.

        `edit` runs inside the write transaction on the freshest state and may raise to
        abort; nothing is written then. With `refuse_duplicates`, DuplicateHousehold is
        raised when another live household holds the target's No. KK or a member's NIK.
        """
        async with self.db.write() as conn:
            docs = await self._load_docs(conn, [record_id])
            if record_id not in docs or docs[record_id][1]:
                raise RecordNotFound(record_id)
            doc = docs[record_id][0]
            current = doc.household()
            target = edit(current)
            self.check_scope(current.get("kode_wilayah"), target.get("kode_wilayah"))
            if refuse_duplicates and not delete:
                await duplicates.refuse_duplicates(conn, target, record_id)
            changes = doc.set_state(target, operator, self.clock(), deleted=delete)
            await self._commit(conn, [PlannedWrite(record_id, doc, changes)])
        return _view(record_id, doc)

    async def resolve(
        self, record_id: str, path: Path, value: Any, operator: str
    ) -> dict[str, Any]:
        """Settle a conflict on `path` with `value` (a verifier's choice) as a new change."""
        async with self.db.write() as conn:
            docs = await self._load_docs(conn, [record_id])
            if record_id not in docs or docs[record_id][1]:
                raise RecordNotFound(record_id)
            doc = docs[record_id][0]
            self.check_scope(doc.household().get("kode_wilayah"))
            changes = resolve(doc, path, value, operator, self.clock())
            await self._commit(conn, [PlannedWrite(record_id, doc, changes)])
        return _view(record_id, doc)

    async def import_batch(
        self,
        households: Iterable[tuple[int, Mapping[str, Any]]],
        operator: str,
        match_no_kk: bool = True,
        refuse_duplicates: bool = False,
        member_lines: Mapping[int, Sequence[int]] | None = None,
    ) -> ImportOutcome:
        """Upsert a batch of validated households `(line, household)` in one transaction.

        A household is matched by its `id`, else by `no_kk`; re-importing the same data
        writes nothing. Deleted records are not revived; they are reported. With
        `refuse_duplicates`, a member whose NIK another live household (or an earlier one
        of the batch) holds is refused on its line (`member_lines`: household line -> its
        members' lines), the rest of the household imported; a household whose No. KK
        another one holds is refused whole.
        """
        outcome = ImportOutcome()
        batch = list(households)
        async with self.db.write() as conn:
            ids: dict[int, str | None] = {}
            for index, (_, household) in enumerate(batch):
                ids[index] = household.get("id")
            if match_no_kk:
                await self._match_by_kk(conn, batch, ids)
            docs = await self._load_docs(conn, [i for i in ids.values() if i])
            guard = (
                await duplicates.BatchGuard.load(conn, batch, member_lines or {})
                if refuse_duplicates
                else None
            )
            planned: dict[str, PlannedWrite] = {}
            for index, (line, household) in enumerate(batch):
                rid = ids[index]
                if rid is None:
                    rid = str(uuid7())
                    ids[index] = rid
                if guard is not None:
                    household = await guard.admit(conn, rid, line, household, outcome.rejected)
                    if household is None:
                        continue
                write = planned.get(rid)
                if write is None and rid in docs:
                    doc, deleted = docs[rid]
                    if deleted:
                        outcome.rejected.append((line, f"household {rid} was deleted here"))
                        continue
                    write = PlannedWrite(rid, doc, [])
                current = write.doc.household() if write else None
                try:
                    self.check_scope(household.get("kode_wilayah"))
                    self.check_scope((current or {}).get("kode_wilayah"))
                except OutOfScope as exc:
                    outcome.rejected.append((line, str(exc)))
                    continue
                doc = write.doc if write else RecordDoc.new(self.actor)
                changes = doc.set_state(merge_import(current, household), operator, self.clock())
                if write is None:
                    outcome.created += 1
                elif changes and not write.changes:
                    outcome.updated += 1
                elif not changes:
                    outcome.unchanged += 1
                planned[rid] = PlannedWrite(rid, doc, (write.changes if write else []) + changes)
                outcome.persons += len(household.get(MEMBERS, []))
            await self._commit(conn, list(planned.values()))
        return outcome

    async def _match_by_kk(
        self, conn: aiosqlite.Connection, batch: Sequence[tuple[int, Mapping]], ids: dict
    ) -> None:
        wanted = {h["no_kk"]: i for i, (_, h) in enumerate(batch) if not h.get("id")}
        kks = list(wanted)
        for start in range(0, len(kks), 500):
            chunk = kks[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT no_kk, id FROM records WHERE no_kk IN ({marks}) AND deleted = 0"
            async with conn.execute(sql, chunk) as cursor:
                async for kk, rid in cursor:
                    ids[wanted[kk]] = rid

    # ----- reading -------------------------------------------------------------------

    async def get(self, record_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT doc FROM record_bodies WHERE id = ?", (record_id,))
        return _viewed(record_id, row[0]) if row else None

    async def search(
        self,
        q: str | None = None,
        kode_wilayah: str | None = None,
        status_usulan: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Live records matching every given filter, newest first, and their total count.

        `q` matches a NIK or KK number by prefix when it is digits, else a member name
        (case-insensitive substring, through the trigram index from 3 characters on).
        `kode_wilayah` matches by prefix. Filters and order run on the narrow `records`
        rows; only the page's bodies are read.
        """
        where = ["deleted = 0"]
        params: list[Any] = []
        if kode_wilayah:
            where.append("kode_wilayah >= ? AND kode_wilayah < ?")
            params += [kode_wilayah, kode_wilayah + ":"]
        if status_usulan:
            where.append("status_usulan = ?")
            params.append(status_usulan)
        if q:
            q = q.strip()
            if q.isdigit():
                where.append(
                    "id IN (SELECT record_id FROM persons WHERE nik >= ? AND nik < ?"
                    " UNION SELECT id FROM records WHERE no_kk >= ? AND no_kk < ?)"
                )
                params += [q, q + ":", q, q + ":"]
            elif len(q) >= TRIGRAM:
                where.append(
                    "id IN (SELECT record_id FROM persons WHERE rowid IN"
                    " (SELECT rowid FROM person_names WHERE person_names MATCH ?))"
                )
                params.append('"' + q.upper().replace('"', '""') + '"')
            else:
                escaped = q.upper().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                where.append("id IN (SELECT record_id FROM persons WHERE nama LIKE ? ESCAPE '\\')")
                params.append(f"%{escaped}%")
        if q:
            # the q subquery is the selective part: keep the planner from walking every
            # live record by the (deleted, updated) index and probing the list for each
            where[0] = "+deleted = 0"
        clause = " AND ".join(where)
        sql = f"FROM records WHERE {clause} ORDER BY updated_ms DESC, id LIMIT ? OFFSET ?"
        # with q, the matches are computed once: find the page and count them in one pass;
        # without, indexes answer the page and the count cheaply on their own
        counted = "count(*) OVER ()" if q else "NULL"
        page = await self.db.fetchall(f"SELECT id, {counted} {sql}", [*params, limit, offset])
        if page and page[0][1] is not None:
            total = int(page[0][1])
        else:
            row = await self.db.fetchone(f"SELECT count(*) FROM records WHERE {clause}", params)
            total = int(row[0]) if row else 0
        ids = [r[0] for r in page]
        bodies = dict(
            await self.db.fetchall(
                f"SELECT id, doc FROM record_bodies WHERE id IN ({','.join('?' * len(ids))})",
                ids,
            )
        )
        return [_viewed(i, bodies[i]) for i in ids], total

    async def iter_all(self) -> AsyncIterator[dict[str, Any]]:
        """Every live record, streamed in id order (memory stays flat)."""
        sql = (
            "SELECT r.id, b.doc FROM records r JOIN record_bodies b USING (id)"
            " WHERE r.deleted = 0 ORDER BY r.id"
        )
        async with self.db.reader.execute(sql) as cursor:
            async for record_id, data in cursor:
                yield _viewed(record_id, data)

    async def history(self, record_id: str) -> list[dict[str, Any]] | None:
        row = await self.db.fetchone("SELECT doc FROM record_bodies WHERE id = ?", (record_id,))
        if row is None:
            return None
        return [
            {
                "at": iso_ms(info.at_ms),
                "node": info.actor.hex(),
                "operator": info.operator,
                "fields": info.fields,
                "change": info.hash.hex(),
            }
            for info in RecordDoc.load(row[0]).history()
        ]

    async def counts(self) -> dict[str, int]:
        records = await self.db.fetchone("SELECT count(*) FROM records WHERE deleted = 0")
        entries = await self.db.fetchone("SELECT count(*) FROM entries")
        own = await self.db.fetchone("SELECT seq FROM feeds WHERE origin = ?", (self.actor,))
        return {
            "records": int(records[0]) if records else 0,
            "entries": int(entries[0]) if entries else 0,
            "feed_length": int(own[0]) if own else 0,
        }

    # ----- verification --------------------------------------------------------------

    async def verify_feeds(self, verifier: Verifier) -> dict[str, int]:
        """Check every stored feed's hash chain and checkpoint signatures.

        Returns origin (hex) -> verified seq; raises FeedError on the first problem.
        """
        result = {}
        feeds = await self.db.fetchall("SELECT origin, seq, public_key FROM feeds")
        for origin, seq, public_key in feeds:
            if public_key is None:
                raise FeedError(f"origin {origin.hex()}: no public key known")
            checkpoints = [
                Checkpoint(*row)
                for row in await self.db.fetchall(
                    "SELECT origin, seq, chain, at_ms, signature FROM checkpoints"
                    " WHERE origin = ? ORDER BY seq",
                    (origin,),
                )
            ]
            async with self.db.reader.execute(
                "SELECT origin, seq, record_id, change FROM entries WHERE origin = ? ORDER BY seq",
                (origin,),
            ) as cursor:
                entries = [Entry(*row) async for row in cursor]
            verified = verify_feed_chain(entries, checkpoints, public_key, verifier)
            if verified != seq:
                raise FeedError(f"origin {origin.hex()}: feed head {seq} but verified {verified}")
            result[origin.hex()] = verified
        return result
