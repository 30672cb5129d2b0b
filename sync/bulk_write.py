"""Writing many rows at once, on SQLite's own thread, with Python's lock taken rarely.

A sync applies the next chunks (Automerge, on the event loop's thread) while the last
batch is written. Each statement run through aiosqlite is a hand-off between threads,
and `executemany` takes Python's lock again for every row; while the event loop is
busy, each of those waits up to a switch interval. So the writes here are plain
functions of a `sqlite3.Connection`, run in one hand-off by `database.on_thread`, and
each table's rows are bound once: text and numbers as one JSON array unpacked by
SQLite's `json_each`, blobs packed into one parameter and cut out again by `substr`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from simpul.sync.feed import Entry


@dataclass
class RecordRows:
    """The stored rows of some records: narrow rows, documents, person rows."""

    records: list[tuple[str, str, str, str, int, int]] = field(default_factory=list)
    bodies: list[tuple[str, bytes]] = field(default_factory=list)
    persons: list[tuple[str, str, str]] = field(default_factory=list)

    def extend(self, more: RecordRows) -> None:
        self.records += more.records
        self.bodies += more.bodies
        self.persons += more.persons


class PackedBlobs:
    """Blobs joined into one parameter; `add` gives the 1-based start and length that
    SQLite's `substr(blob, start, length)` cuts each one out with."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._next = 1

    def add(self, data: bytes) -> tuple[int, int]:
        start = self._next
        self._parts.append(data)
        self._next += len(data)
        return start, len(data)

    def blob(self) -> bytes:
        return b"".join(self._parts)


def json_rows(rows: Iterable[Sequence[Any]]) -> str:
    """Rows as one compact JSON array, for `json_each`."""
    return json.dumps(list(rows), ensure_ascii=False, separators=(",", ":"))


def insert_entries(conn: sqlite3.Connection, entries: Iterable[Entry]) -> None:
    """Append feed entries (inside the caller's transaction)."""
    packed = PackedBlobs()
    rows = [
        (e.seq, *packed.add(e.origin), *packed.add(e.record_id), *packed.add(e.change))
        for e in entries
    ]
    conn.execute(
        "INSERT INTO entries (origin, seq, record_id, change)"
        " SELECT substr(:blob, value ->> 1, value ->> 2), value ->> 0,"
        " substr(:blob, value ->> 3, value ->> 4), substr(:blob, value ->> 5, value ->> 6)"
        " FROM json_each(:rows)",
        {"rows": json_rows(rows), "blob": packed.blob()},
    )


def write_record_rows(conn: sqlite3.Connection, rows: RecordRows) -> None:
    """Replace the stored rows of the records in `rows` (inside the caller's transaction)."""
    records = json_rows(rows.records)
    conn.execute(
        "INSERT INTO records (id, kode_wilayah, no_kk, status_usulan, updated_ms, deleted)"
        " SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5"
        " FROM json_each(?) WHERE true ON CONFLICT (id) DO UPDATE SET"
        " kode_wilayah = excluded.kode_wilayah, no_kk = excluded.no_kk,"
        " status_usulan = excluded.status_usulan, updated_ms = excluded.updated_ms,"
        " deleted = excluded.deleted",
        (records,),
    )
    packed = PackedBlobs()
    bodies = [(record_id, *packed.add(doc)) for record_id, doc in rows.bodies]
    conn.execute(
        "INSERT INTO record_bodies (id, doc)"
        " SELECT value ->> 0, substr(:blob, value ->> 1, value ->> 2) FROM json_each(:rows)"
        " WHERE true ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
        {"rows": json_rows(bodies), "blob": packed.blob()},
    )
    conn.execute(
        "DELETE FROM persons WHERE record_id IN (SELECT value ->> 0 FROM json_each(?))",
        (records,),
    )
    (last,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM persons").fetchone()
    conn.execute(
        "INSERT INTO persons (record_id, nik, nama)"
        " SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?)",
        (json_rows(rows.persons),),
    )
    # One bulk statement feeds the name index: ten times faster than a per-row trigger.
    conn.execute(
        "INSERT INTO person_names (rowid, nama) SELECT rowid, nama FROM persons WHERE rowid > ?",
        (last,),
    )
