"""Test helper: the record documents of a node's store, read directly and read-only."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from simpul.sync.record_doc import RecordDoc


def documents(data_dir: Path) -> dict[str, RecordDoc]:
    """Every record's Automerge document (a running node may hold the store open)."""
    uri = f"file:{data_dir / 'simpul.db'}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as db:
        rows = db.execute("SELECT id, doc FROM record_bodies").fetchall()
    return {record_id: RecordDoc.load(data) for record_id, data in rows}


def heads(data_dir: Path) -> dict[str, list[str]]:
    """Every record's Automerge heads (hex, sorted), for convergence checks."""
    return {rid: sorted(h.hex() for h in doc.heads) for rid, doc in documents(data_dir).items()}
