"""Duplicate households: a member NIK or a No. KK that another live household holds.

Two places find them. Writes on this node (API, form, import) are refused by default when
they would create one (`refuse_duplicates`, `DuplicateHousehold` names the other household),
inside the write's transaction. Duplicates that arrive by sync (two villages registered one
family offline) cannot be refused, since both were acknowledged where they were made: `pairs`
lists them for a verifier, who merges them or keeps both (`keep_both`, remembered on this
node in `duplicates_kept`).

All lookups use the search indexes the store keeps (`records.no_kk`, `persons.nik`): no
document is loaded.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from simpul.sync.database import Database

CHUNK = 500
MEMBERS = "anggota"


@dataclass(frozen=True)
class Holder:
    """A live household holding an identifier: its id, KK and first member's name."""

    id: str
    no_kk: str
    nama: str

    def label(self) -> str:
        return f"{self.nama} (KK {self.no_kk})" if self.nama else f"KK {self.no_kk}"


class DuplicateHousehold(Exception):
    """A write would give a NIK or No. KK a second live household."""

    def __init__(self, field: str, value: str, other: Holder) -> None:
        what = "NIK" if field == "nik" else "No. KK"
        super().__init__(f"{what} {value} is already held by household {other.id}, {other.label()}")
        self.field = field  # "nik" or "no_kk"
        self.value = value
        self.other = other


@dataclass(frozen=True)
class DuplicatePair:
    """Two live households sharing identifiers (`shared`: "NIK 17..", "No. KK 17..")."""

    first: Holder
    second: Holder
    shared: tuple[str, ...]


NIK_HOLDERS = (
    "SELECT p.nik, p.record_id FROM persons p JOIN records r ON r.id = p.record_id"
    " WHERE r.deleted = 0 AND p.nik IN "
)
KK_HOLDERS = "SELECT no_kk, id FROM records WHERE deleted = 0 AND no_kk IN "


async def _holders(
    conn: aiosqlite.Connection, select: str, values: Iterable[str]
) -> dict[str, set[str]]:
    """value -> ids of the live households that `select` (rows of value, id) finds for it."""
    found: dict[str, set[str]] = {}
    wanted = list(dict.fromkeys(values))
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        async with conn.execute(f"{select}({','.join('?' * len(chunk))})", chunk) as cursor:
            async for value, record_id in cursor:
                found.setdefault(value, set()).add(record_id)
    return found


async def nik_holders(conn: aiosqlite.Connection, niks: Iterable[str]) -> dict[str, set[str]]:
    """NIK -> ids of the live households that hold it."""
    return await _holders(conn, NIK_HOLDERS, niks)


async def kk_holders(conn: aiosqlite.Connection, kks: Iterable[str]) -> dict[str, set[str]]:
    """No. KK -> ids of the live households that hold it."""
    return await _holders(conn, KK_HOLDERS, kks)


async def holder(conn: aiosqlite.Connection, record_id: str) -> Holder:
    sql = (
        "SELECT r.no_kk, (SELECT p.nama FROM persons p WHERE p.record_id = r.id"
        " ORDER BY p.rowid LIMIT 1) FROM records r WHERE r.id = ?"
    )
    async with conn.execute(sql, (record_id,)) as cursor:
        row = await cursor.fetchone()
    return Holder(record_id, row[0] if row else "", (row[1] or "") if row else "")


async def refuse_duplicates(
    conn: aiosqlite.Connection, household: Mapping[str, Any], record_id: str | None
) -> None:
    """Raise DuplicateHousehold if another live household holds this one's KK or a NIK."""
    kk = str(household.get("no_kk", ""))
    for other in sorted((await kk_holders(conn, [kk])).get(kk, set()) - {record_id}):
        raise DuplicateHousehold("no_kk", kk, await holder(conn, other))
    niks = [str(m.get("nik", "")) for m in household.get(MEMBERS, [])]
    holders = await nik_holders(conn, niks)
    for nik in niks:
        for other in sorted(holders.get(nik, set()) - {record_id}):
            raise DuplicateHousehold("nik", nik, await holder(conn, other))


class BatchGuard:
    """Duplicate checks for one import batch: who held each NIK and No. KK before it, plus
    what earlier households of the batch claimed."""

    def __init__(
        self,
        niks: dict[str, set[str]],
        kks: dict[str, set[str]],
        member_lines: Mapping[int, Sequence[int]],
    ) -> None:
        self.niks = niks
        self.kks = kks
        self.member_lines = member_lines
        self.claimed: dict[str, Holder] = {}  # households of this batch, not stored yet

    @classmethod
    async def load(
        cls,
        conn: aiosqlite.Connection,
        batch: Sequence[tuple[int, Mapping[str, Any]]],
        member_lines: Mapping[int, Sequence[int]],
    ) -> BatchGuard:
        niks = [str(m["nik"]) for _, h in batch for m in h[MEMBERS]]
        kks = [str(h["no_kk"]) for _, h in batch]
        return cls(await nik_holders(conn, niks), await kk_holders(conn, kks), member_lines)

    async def _holder(self, conn: aiosqlite.Connection, ids: set[str]) -> Holder:
        first = min(ids)
        return self.claimed.get(first) or await holder(conn, first)

    async def admit(
        self,
        conn: aiosqlite.Connection,
        record_id: str,
        line: int,
        household: Mapping[str, Any],
        rejected: list[tuple[int, str]],
    ) -> dict[str, Any] | None:
        """The household without refused members (their lines and reasons added to
        `rejected`), or None when nothing of it may be imported."""
        members = household[MEMBERS]
        lines = list(self.member_lines.get(line, ())) or [line] * len(members)
        kk = str(household["no_kk"])
        others = self.kks.get(kk, set()) - {record_id}
        if others:
            other = await self._holder(conn, others)
            reason = f"NOMOR KK {kk} is already held by household {other.id}, {other.label()}"
            rejected.extend((member_line, reason) for member_line in lines)
            return None
        kept = []
        for member, member_line in zip(members, lines, strict=True):
            others = self.niks.get(member["nik"], set()) - {record_id}
            if others:
                other = await self._holder(conn, others)
                rejected.append(
                    (
                        member_line,
                        f"NIK {member['nik']} is already in household {other.id}, {other.label()}",
                    )
                )
            else:
                kept.append(member)
        if not kept:
            return None
        self.kks.setdefault(kk, set()).add(record_id)
        for member in kept:
            self.niks.setdefault(member["nik"], set()).add(record_id)
        self.claimed.setdefault(record_id, Holder(record_id, kk, str(kept[0]["nama"])))
        return {**household, MEMBERS: kept}


async def pairs(db: Database) -> list[DuplicatePair]:
    """Pairs of live households sharing a NIK or a No. KK, except those a verifier kept."""
    shared: dict[tuple[str, str], list[str]] = {}
    sql_nik = (
        "SELECT p.nik, group_concat(DISTINCT p.record_id) FROM persons p"
        " JOIN records r ON r.id = p.record_id WHERE r.deleted = 0"
        " GROUP BY p.nik HAVING count(DISTINCT p.record_id) > 1"
    )
    sql_kk = (
        "SELECT no_kk, group_concat(id) FROM records WHERE deleted = 0"
        " GROUP BY no_kk HAVING count(*) > 1"
    )
    for label, sql in (("No. KK", sql_kk), ("NIK", sql_nik)):
        for value, ids in await db.fetchall(sql):
            holders = sorted(ids.split(","))
            for i, first in enumerate(holders):
                for second in holders[i + 1 :]:
                    shared.setdefault((first, second), []).append(f"{label} {value}")
    kept = {(a, b) for a, b in await db.fetchall("SELECT first_id, second_id FROM duplicates_kept")}
    found = []
    for (first, second), what in sorted(shared.items()):
        if (first, second) not in kept:
            first_holder, second_holder = (
                await holder(db.reader, first),
                await holder(db.reader, second),
            )
            found.append(DuplicatePair(first_holder, second_holder, tuple(what)))
    return found


async def keep_both(db: Database, first: str, second: str, username: str) -> None:
    """A verifier judged the two households to be two families: stop listing the pair."""
    a, b = sorted((first, second))
    async with db.write() as conn:
        await conn.execute(
            "INSERT OR REPLACE INTO duplicates_kept (first_id, second_id, username, at_ms)"
            " VALUES (?, ?, ?, ?)",
            (a, b, username, int(time.time() * 1000)),
        )


def merged_members(
    kept: Sequence[Mapping[str, Any]], other: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The kept household's members plus the other's members whose NIK it lacks."""
    niks = {m["nik"] for m in kept}
    return [dict(m) for m in kept] + [dict(m) for m in other if m["nik"] not in niks]
