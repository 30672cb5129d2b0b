"""Upgrades: a database at every schema version opens with the current code, data intact;
a migration that fails midway leaves the old file byte for byte as it was.

Each old database is built the way an older Simpul built it: the migration statements up
to version N (WAL mode, `user_version` N), then the rows a real node wrote (records from
imports and edits, a deletion, a peer's feed with its certificate, an entry waiting for its
dependencies, operators, tokens, peers) copied into the tables that version has.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from certified_peers import Network
from conftest import simpul_cli
from sync_peers import sync_one_way

from simpul.crypto.node_key import verify_signature
from simpul.node.peers import PeerTable
from simpul.sync.database import Database, DatabaseError
from simpul.sync.migrations import MIGRATIONS, SCHEMA_VERSION, statements
from simpul.sync.operators import Operators
from simpul.sync.store import RecordStore

FTS_SHADOW = ("person_names_",)
TABLES_AT = {
    0: 0,
    1: 9,
    2: 11,
    3: 12,
    4: 12,
    5: 14,
    6: 14,
    7: 15,
    8: 17,
}  # a new migration adds its entry


def tables(conn: sqlite3.Connection) -> list[str]:
    """Plain tables (no virtual tables, no full-text index internals)."""
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL%'"
        " AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    return [name for (name,) in rows if not name.startswith(FTS_SHADOW)]


def columns(conn: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA {schema}.table_info({table})")]


def rows(conn: sqlite3.Connection, table: str, names: list[str] | None = None) -> list[tuple]:
    selected = ", ".join(names or columns(conn, "main", table))
    return sorted(conn.execute(f"SELECT {selected} FROM {table}").fetchall(), key=repr)


@pytest.fixture
async def written(network: Network, households_jsonl: list, tmp_path: Path) -> tuple[Path, str]:
    """A current-version database with what a working node writes; and a valid token."""
    office = await network.node(["1709", "1702"])
    village = await network.node(["1709"])
    for household in households_jsonl[:8]:
        await office.records.create(household, "ani")
    await sync_one_way(office, village)  # the office's feed + certificate, in the village
    local = [h for h in households_jsonl[8:20] if h["kode_wilayah"].startswith("1709")][:4]
    await village.records.import_batch(list(enumerate(local)), "import")
    await village.records.update(local[0]["id"], lambda h: {**h, "desil": 1}, "budi")
    await village.records.update(local[1]["id"], lambda h: h, "budi", delete=True)
    async with village.db.write() as conn:  # an entry held while its deps are missing
        await conn.execute(
            "INSERT INTO pending_entries (origin, seq, record_id) VALUES (?, 1, ?)",
            (office.origin, b"\x01" * 16),
        )
    operators = Operators(village.db)
    await operators.add("budi", "verifier", "kata-sandi-rahasia")
    token = await operators.create_token("budi")
    await PeerTable(village.db).add_manual("192.168.1.20", 8471)
    path = village.db.path
    await village.db.close()
    network.peers.remove(village)
    return path, token


def build_at(version: int, source: Path, target: Path) -> None:
    """The database an older Simpul would hold: schema up to `version`, `source`'s rows."""
    conn = sqlite3.connect(target, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN")
        for script in MIGRATIONS[:version]:
            for statement in statements(script):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("ATTACH DATABASE ? AS src", (str(source),))
        for table in tables(conn):
            ours, theirs = columns(conn, "main", table), columns(conn, "src", table)
            shared = [c for c in ours if c in theirs]
            dropped = [c for c in ours if c not in theirs]  # by a later migration, e.g. the
            # JSON view of records (4): derived data, any JSON will do
            names = ", ".join(shared + dropped)
            values = ", ".join(shared + ["'{}'"] * len(dropped))
            conn.execute(f"INSERT INTO main.{table} ({names}) SELECT {values} FROM src.{table}")
        if version >= 1:
            conn.execute("INSERT INTO person_names (person_names) VALUES ('rebuild')")
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE src")
    finally:
        conn.close()


@pytest.mark.parametrize("version", range(SCHEMA_VERSION + 1))
async def test_every_schema_version_opens_with_its_data_intact(
    written: tuple[Path, str], tmp_path: Path, version: int
) -> None:
    source, token = written
    old = tmp_path / f"v{version}.db"
    if version == 0:
        old.write_bytes(b"")  # a file made before anything was written
    else:
        build_at(version, source, old)
    with closing(sqlite3.connect(old)) as conn:
        kept = {table: rows(conn, table) for table in tables(conn)}
        kept_columns = {table: columns(conn, "main", table) for table in kept}
    assert len(kept) == TABLES_AT[version]

    db = await Database.open(old)
    try:
        store = RecordStore(db, b"\x00" * 16, b"", lambda message: b"")
        verified = await store.verify_feeds(verify_signature)
        counts = await store.counts()
        found = await store.search(q="a")
        operator = await Operators(db).by_token(token)
    finally:
        await db.close()

    with closing(sqlite3.connect(old)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert len(tables(conn)) == TABLES_AT[SCHEMA_VERSION]
        for table, before in kept.items():  # every column a migration kept, unchanged
            names = [c for c in kept_columns[table] if c in columns(conn, "main", table)]
            picked = [[row[kept_columns[table].index(c)] for c in names] for row in before]
            assert rows(conn, table, names) == sorted(map(tuple, picked), key=repr), table
    if version == 0:
        assert (verified, counts["records"]) == ({}, 0)
        return
    assert len(verified) == 2 and sum(verified.values()) == len(kept["entries"])
    assert counts["records"] == 8 + 4 - 1  # the deleted one is kept, not counted
    assert found[1] > 0  # the name index answers
    assert operator is not None and operator.username == "budi"


async def test_a_migration_failing_midway_leaves_the_file_untouched(
    written: tuple[Path, str], tmp_path: Path
) -> None:
    old = tmp_path / "v1.db"
    build_at(1, written[0], old)
    with closing(sqlite3.connect(old)) as conn:  # a table migration 2 creates, made by hand
        conn.execute("CREATE TABLE pending_entries (note TEXT)")
        conn.commit()
    before = old.read_bytes()
    with pytest.raises(DatabaseError, match="pending_entries already exists"):
        await Database.open(old)  # migration 2: origin_certificates made, then this fails
    assert old.read_bytes() == before
    assert not old.with_name(old.name + "-wal").exists()
    with closing(sqlite3.connect(old)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert "origin_certificates" not in tables(conn)
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    old.rename(data_dir / "simpul.db")
    refused = simpul_cli(data_dir, "status")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "already exists" in refused.stderr
    assert (data_dir / "simpul.db").read_bytes() == before


async def test_a_database_from_a_newer_simpul_is_refused_untouched(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    with closing(sqlite3.connect(newer)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()
    before = newer.read_bytes()
    with pytest.raises(DatabaseError, match="newer than this Simpul"):
        await Database.open(newer)
    assert newer.read_bytes() == before
