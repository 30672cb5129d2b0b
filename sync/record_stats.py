"""Read-only summaries of the stored households for the operator page: counts by proposal
status and by village, and the records whose fields hold unresolved conflicts.

Each query runs on the narrow `records` rows or a partial index (migration 4), so a
dashboard stays fast with tens of thousands of households.
"""

from __future__ import annotations

import json
from typing import Any

from simpul.sync.database import Database

CONFLICTED = "json_extract(b.json, '$._meta.conflicts[0]') IS NOT NULL"


async def by_status(db: Database) -> dict[str, int]:
    rows = await db.fetchall(
        "SELECT status_usulan, count(*) FROM records WHERE deleted = 0 GROUP BY status_usulan"
    )
    return {row[0]: int(row[1]) for row in rows}


async def by_village(db: Database, limit: int) -> tuple[list[tuple[str, int]], int]:
    """The `limit` villages with most households (code, count), and how many villages."""
    rows = await db.fetchall(
        "SELECT kode_wilayah, count(*) AS n FROM records WHERE deleted = 0"
        " GROUP BY kode_wilayah ORDER BY n DESC, kode_wilayah"
    )
    return [(row[0], int(row[1])) for row in rows[:limit]], len(rows)


async def villages(db: Database) -> list[str]:
    """Every village code that has a live household, in order (for filters)."""
    rows = await db.fetchall(
        "SELECT DISTINCT kode_wilayah FROM records WHERE deleted = 0 ORDER BY kode_wilayah"
    )
    return [row[0] for row in rows]


async def conflicted(db: Database, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Live records with at least one conflicted field (up to `limit`), and their count."""
    sql = f"FROM record_bodies b JOIN records r USING (id) WHERE {CONFLICTED} AND r.deleted = 0"
    total = await db.fetchone(f"SELECT count(*) {sql}")
    rows = await db.fetchall(f"SELECT b.json {sql} ORDER BY r.updated_ms DESC LIMIT ?", (limit,))
    return [json.loads(row[0]) for row in rows], int(total[0]) if total else 0
