"""Read-only summaries of the stored households for the operator page: counts by proposal
status and by village, and the records whose fields hold unresolved conflicts.

Each query walks one covering index of the narrow `records` rows or a partial index
(migration 4), so a dashboard stays fast with tens of thousands of households.
"""

from __future__ import annotations

import json
from typing import Any

from simpul.sync.database import Database

# the partial index's own condition, so the planner walks that (small) index
CONFLICTED_IDS = (
    "SELECT id FROM record_bodies WHERE json_extract(json, '$._meta.conflicts[0]') IS NOT NULL"
)


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


async def conflicted(db: Database, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Live records with at least one conflicted field (up to `limit`), and their count."""
    live = f"FROM records WHERE id IN ({CONFLICTED_IDS}) AND +deleted = 0"  # by id, no walk
    total = await db.fetchone(f"SELECT count(*) {live}")
    page = await db.fetchall(f"SELECT id {live} ORDER BY updated_ms DESC LIMIT ?", (limit,))
    ids = [row[0] for row in page]
    marks = ",".join("?" * len(ids))
    bodies = dict(
        await db.fetchall(f"SELECT id, json FROM record_bodies WHERE id IN ({marks})", ids)
    )
    return [json.loads(bodies[i]) for i in ids], int(total[0]) if total else 0
