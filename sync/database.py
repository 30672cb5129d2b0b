"""The node's SQLite file: connections, pragmas, migrations and serialised write transactions.

One writer connection (guarded by an asyncio lock, every write in `BEGIN IMMEDIATE` so
other processes such as a CLI import queue behind it) and one reader connection, which
in WAL mode sees only committed data. `synchronous=FULL`: a commit the API acknowledged
survives a power cut, not only a killed process.

Each connection runs on a thread of its own. Bulk work goes there whole (`on_thread`),
and opening a database shortens Python's switch interval, so that thread gets Python's
lock back after each statement without waiting behind a busy event loop.

The database file is the owner's alone (0600), made so before SQLite opens it; SQLite gives
its WAL and shared-memory files the main file's mode, and any left from an older run are
narrowed too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import aiosqlite

from simpul.sync.migrations import MIGRATIONS, SCHEMA_VERSION, statements

log = logging.getLogger(__name__)

DB_FILE = "simpul.db"  # a node's database, in its data dir
BUSY_TIMEOUT_MS = 30_000
# Python's default is 5 ms: during a sync the SQLite thread waited that long for the lock
# after each statement while the event loop applied the next chunk (W1 12 s -> 9 s).
SWITCH_INTERVAL_S = 0.001

T = TypeVar("T")

FILE_MODE = 0o600
SIDE_FILES = ("-wal", "-shm", "-journal")


class DatabaseError(Exception):
    """The database file cannot be opened, is from a newer version, or failed to migrate."""


class DiskFull(DatabaseError):
    """A write found the disk full; it was rolled back whole."""


def _disk_full(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.Error) else None
    return code is not None and code & 0xFF == sqlite3.SQLITE_FULL  # an extended code too


def _make_private(path: Path) -> None:
    """`path` (created empty if missing) and its SQLite side files readable by the owner only."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE))
    for suffix in ("", *SIDE_FILES):
        try:
            os.chmod(path.with_name(path.name + suffix), FILE_MODE)
        except FileNotFoundError:
            continue


async def _connect(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = FULL")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA cache_size = -32768")
    except BaseException:
        await conn.close()
        raise
    return conn


async def _migrate(conn: aiosqlite.Connection, path: Path) -> None:
    await conn.execute("BEGIN IMMEDIATE")
    try:
        async with conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise DatabaseError(
                f"{path} has schema version {version}, newer than this Simpul "
                f"({SCHEMA_VERSION}); upgrade Simpul instead of downgrading"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            log.info("migration apply version=%d path=%s", number, path)
            for statement in statements(MIGRATIONS[number - 1]):
                await conn.execute(statement)
        await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise


class Database:
    """The open SQLite store of one node."""

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._lock = asyncio.Lock()
        self._after_commit: list[Callable[[], None]] = []

    @classmethod
    async def open(cls, path: Path) -> Database:
        path.parent.mkdir(parents=True, exist_ok=True)
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        try:
            _make_private(path)
        except OSError as exc:
            raise DatabaseError(f"cannot open database {path}: {exc}") from exc
        try:
            writer = await _connect(path)
            try:
                await _migrate(writer, path)
            except BaseException:
                await writer.close()
                raise
            reader = await _connect(path)
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(f"cannot open database {path}: {exc}") from exc
        return cls(path, writer, reader)

    async def close(self) -> None:
        async with self._lock:
            await self._reader.close()
            await self._writer.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; commits on success, rolls back on any exception.

        A full disk (while writing or committing) raises DiskFull once the transaction is
        rolled back: the store keeps what it had before it."""
        async with self._lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            self._after_commit = []
            try:
                yield self._writer
                await self._writer.execute("COMMIT")
            except BaseException as exc:
                self._after_commit = []
                if self._writer.in_transaction:  # SQLite may have rolled back already
                    await self._writer.execute("ROLLBACK")
                if _disk_full(exc):
                    log.info("database write refused path=%s reason=disk full", self.path)
                    raise DiskFull(
                        f"the disk holding {self.path} is full: this write was not saved and "
                        "nothing stored before it is lost; free some space ('simpul doctor' "
                        "shows how much is left) and try again"
                    ) from exc
                raise
            hooks, self._after_commit = self._after_commit, []
        for hook in hooks:
            hook()

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Call `hook` once the write transaction now open has committed (never if it
        rolls back): what reacts to a write only ever sees committed data."""
        self._after_commit.append(hook)

    @property
    def reader(self) -> aiosqlite.Connection:
        return self._reader

    async def fetchall(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        async with self._reader.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def fetchone(self, sql: str, params: tuple | list = ()) -> sqlite3.Row | None:
        async with self._reader.execute(sql, params) as cursor:
            return await cursor.fetchone()


async def on_thread(conn: aiosqlite.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run `work` on `conn`'s own thread with the plain connection under it, inside
    whatever transaction `conn` has open: many statements for one hand-off.

    aiosqlite has no public call for this; `_execute` and `_conn` are what its own
    methods use (pinned below 0.23 in pyproject.toml; a change breaks every sync test)."""
    return await conn._execute(work, conn._conn)
