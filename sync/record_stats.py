"""Read-only summaries of the stored households for the operator page: counts by proposal
status and by village, and the records whose fields hold unresolved conflicts.

The counts walk one covering index of the narrow `records` rows, and the conflicted
records are tracked incrementally, so a dashboard stays fast with tens of thousands of
households.
"""

from __future__ import annotations

from typing import Any

from simpul.sync.database import Database
from simpul.sync.ids import record_id_text
from simpul.sync.store import RecordStore


async def by_status(db: Database) -> dict[str, int]:
    # grouped with `deleted` so that the covering index (status_usulan, deleted, …) answers
    rows = await db.fetchall(
        "SELECT status_usulan, deleted, count(*) FROM records GROUP BY status_usulan, deleted"
    )
    return {row[0]: int(row[2]) for row in rows if not row[1]}


async def by_village(db: Database) -> list[tuple[str, int]]:
    """Every village code with live households and how many, in code order."""
    # grouped with `deleted` so that the covering index (kode_wilayah, deleted) answers
    rows = await db.fetchall(
        "SELECT kode_wilayah, deleted, count(*) FROM records GROUP BY kode_wilayah, deleted"
    )
    return [(row[0], int(row[2])) for row in rows if not row[1]]


class ConflictIndex:
    """Which live records hold unresolved conflicts, kept up to date incrementally.

    A conflict needs changes from two origins, so the first look only examines records
    with entries of more than one origin; later looks examine only the records that got
    new entries since (entries only grow: their rowid says what is new). Records are
    examined through the store's own view (`_meta.conflicts`).
    """

    def __init__(self, records: RecordStore) -> None:
        self.records = records
        self.seen_rowid: int | None = None
        self.ids: set[str] = set()

    async def refresh(self) -> None:
        db = self.records.db
        top = await db.fetchone("SELECT coalesce(max(rowid), 0) FROM entries")
        newest = int(top[0]) if top else 0
        if self.seen_rowid is None:
            rows = await db.fetchall(
                "SELECT record_id FROM entries GROUP BY record_id HAVING min(origin) < max(origin)"
            )
        elif newest > self.seen_rowid:
            rows = await db.fetchall(
                "SELECT DISTINCT record_id FROM entries WHERE rowid > ? AND rowid <= ?",
                (self.seen_rowid, newest),
            )
        else:
            return
        for (raw,) in rows:
            record_id = record_id_text(raw)
            record = await self.records.get(record_id)
            live = record is not None and not record["_meta"]["deleted"]
            if live and record["_meta"]["conflicts"]:
                self.ids.add(record_id)
            else:
                self.ids.discard(record_id)
        self.seen_rowid = newest

    async def conflicted(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Up to `limit` conflicted live records, most recently changed first, and how many."""
        await self.refresh()
        if not self.ids:
            return [], 0
        marks = ",".join("?" * len(self.ids))
        rows = await self.records.db.fetchall(
            f"SELECT id FROM records WHERE id IN ({marks}) ORDER BY updated_ms DESC LIMIT ?",
            [*self.ids, limit],
        )
        found = [await self.records.get(row[0]) for row in rows]
        return [record for record in found if record is not None], len(self.ids)
