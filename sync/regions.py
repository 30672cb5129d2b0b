"""Names of regions next to their codes: village code -> province, regency, district and
village names, as the imported files carry them (PROVINSI, KABUPATEN/KOTA, KECAMATAN,
DESA/KELURAHAN).

Derived from imports on this node (issue 14 allows either this or a synced table): a node
that only receives records by sync shows codes until a file with the names is imported
there too. A later import's names replace earlier ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from simpul.sync.database import Database


class RegionNames(NamedTuple):
    provinsi: str
    kabupaten: str
    kecamatan: str
    desa: str


async def remember(db: Database, names: Mapping[str, Iterable[str]]) -> None:
    """Keep (or replace) the names of these village codes."""
    if not names:
        return
    rows = [(code, *RegionNames(*parts)) for code, parts in names.items()]
    async with db.write() as conn:
        await conn.executemany(
            "INSERT INTO regions (code, provinsi, kabupaten, kecamatan, desa)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (code) DO UPDATE SET"
            " provinsi = excluded.provinsi, kabupaten = excluded.kabupaten,"
            " kecamatan = excluded.kecamatan, desa = excluded.desa",
            rows,
        )


async def all_names(db: Database) -> dict[str, RegionNames]:
    """Every village code this node knows names for."""
    rows = await db.fetchall("SELECT code, provinsi, kabupaten, kecamatan, desa FROM regions")
    return {row[0]: RegionNames(*row[1:]) for row in rows}


def village_label(code: str, names: Mapping[str, RegionNames]) -> str:
    """`DESA 2013 (1709092013)`, or the code alone when its name is not known."""
    known = names.get(code)
    return f"{known.desa} ({code})" if known else code
