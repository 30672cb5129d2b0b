"""The store's SQLite schema, as numbered migrations applied in order on open.

`PRAGMA user_version` holds the applied version. Each migration runs in one transaction
with the version bump, so a failed migration leaves the database as it was. Never edit a
released migration: append a new one.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: records with their search indexes, feeds, checkpoints, operators, tokens, settings
    """
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE records (
        id TEXT PRIMARY KEY,
        doc BLOB NOT NULL,
        json TEXT NOT NULL,
        kode_wilayah TEXT NOT NULL,
        no_kk TEXT NOT NULL,
        status_usulan TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX records_kode_wilayah ON records (kode_wilayah);
    CREATE INDEX records_no_kk ON records (no_kk);
    CREATE INDEX records_status ON records (status_usulan);
    CREATE INDEX records_updated ON records (updated_ms DESC, id);
    CREATE TABLE persons (
        record_id TEXT NOT NULL REFERENCES records (id),
        nik TEXT NOT NULL,
        nama TEXT NOT NULL,
        PRIMARY KEY (record_id, nik)
    ) WITHOUT ROWID;
    CREATE INDEX persons_nik ON persons (nik);
    CREATE TABLE feeds (
        origin BLOB PRIMARY KEY,
        seq INTEGER NOT NULL,
        chain BLOB NOT NULL,
        public_key BLOB
    ) WITHOUT ROWID;
    CREATE TABLE entries (
        origin BLOB NOT NULL,
        seq INTEGER NOT NULL,
        record_id BLOB NOT NULL,
        change BLOB NOT NULL,
        PRIMARY KEY (origin, seq)
    ) WITHOUT ROWID;
    CREATE INDEX entries_record ON entries (record_id);
    CREATE TABLE checkpoints (
        origin BLOB NOT NULL,
        seq INTEGER NOT NULL,
        chain BLOB NOT NULL,
        at_ms INTEGER NOT NULL,
        signature BLOB NOT NULL,
        PRIMARY KEY (origin, seq)
    ) WITHOUT ROWID;
    CREATE TABLE operators (
        username TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('operator', 'verifier', 'admin')),
        password_hash TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE tokens (
        token_hash BLOB PRIMARY KEY,
        username TEXT NOT NULL REFERENCES operators (username) ON DELETE CASCADE,
        created_ms INTEGER NOT NULL
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
