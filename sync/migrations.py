"""The store's SQLite schema, as numbered migrations applied in order on open.

`PRAGMA user_version` holds the applied version. Each migration runs in one transaction
with the version bump, so a failed migration leaves the database as it was. Never edit a
released migration: append a new one.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: records with their search indexes, feeds, checkpoints, operators, tokens, settings
    """
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    -- narrow rows for filtering, counting and ordering; the wide bodies live apart
    CREATE TABLE records (
        id TEXT PRIMARY KEY,
        kode_wilayah TEXT NOT NULL,
        no_kk TEXT NOT NULL,
        status_usulan TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX records_live_order ON records (deleted, updated_ms DESC, id);
    CREATE INDEX records_region ON records (kode_wilayah, deleted);
    CREATE INDEX records_status ON records (status_usulan, deleted, kode_wilayah);
    CREATE INDEX records_no_kk ON records (no_kk);
    CREATE TABLE record_bodies (
        id TEXT PRIMARY KEY REFERENCES records (id),
        doc BLOB NOT NULL,
        json TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE persons (
        record_id TEXT NOT NULL REFERENCES records (id),
        nik TEXT NOT NULL,
        nama TEXT NOT NULL
    );
    CREATE INDEX persons_record ON persons (record_id);
    CREATE INDEX persons_nik ON persons (nik);
    -- substring search on names: a trigram full-text index; the store adds new rows in
    -- bulk after each batch, a trigger removes deleted ones
    CREATE VIRTUAL TABLE person_names USING fts5(
        nama, content = 'persons', content_rowid = 'rowid', tokenize = 'trigram'
    );
    CREATE TRIGGER persons_names_delete AFTER DELETE ON persons BEGIN
        INSERT INTO person_names (person_names, rowid, nama) VALUES ('delete', old.rowid, old.nama);
    END;
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
    # 2: sync engine: certificates of other origins, entries waiting for their Automerge deps
    """
    CREATE TABLE origin_certificates (
        origin BLOB PRIMARY KEY,
        certificate BLOB NOT NULL
    ) WITHOUT ROWID;
    -- feed entries held and forwarded but not yet applied to their record (deps missing),
    -- or never applicable (refusal says why)
    CREATE TABLE pending_entries (
        origin BLOB NOT NULL,
        seq INTEGER NOT NULL,
        record_id BLOB NOT NULL,
        refusal TEXT,
        PRIMARY KEY (origin, seq)
    ) WITHOUT ROWID;
    """,
    # 3: peers found on the LAN (mDNS, keyed by node id) or typed in (manual, keyed by
    # address until contacted), with what syncing with them did
    """
    CREATE TABLE peers (
        id INTEGER PRIMARY KEY,
        node_id TEXT UNIQUE,
        network_id TEXT NOT NULL DEFAULT '',
        host TEXT NOT NULL,
        port INTEGER NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('mdns', 'manual')),
        state TEXT NOT NULL,
        first_seen_ms INTEGER,
        last_seen_ms INTEGER,
        last_sync_ms INTEGER,
        entries_sent INTEGER NOT NULL DEFAULT 0,
        entries_received INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE UNIQUE INDEX peers_manual_address ON peers (host, port) WHERE source = 'manual';
    """,
    # 4: the two tables of wide rows (a change, a document: about 1 KB each) become
    # ordinary rowid tables. As WITHOUT ROWID tables, a row past ~1 KB spilled into an
    # overflow page of its own, so the store took 8 KB per household and every sync or
    # import wrote that much to the WAL and again to the file. The JSON view of each
    # record goes: it doubled what a sync writes, and a page of 50 is built from the
    # documents in milliseconds.
    """
    CREATE TABLE entries_v4 (
        origin BLOB NOT NULL,
        seq INTEGER NOT NULL,
        record_id BLOB NOT NULL,
        change BLOB NOT NULL,
        UNIQUE (origin, seq)
    );
    INSERT INTO entries_v4 (origin, seq, record_id, change)
        SELECT origin, seq, record_id, change FROM entries ORDER BY origin, seq;
    DROP TABLE entries;
    ALTER TABLE entries_v4 RENAME TO entries;
    CREATE INDEX entries_record ON entries (record_id);
    CREATE TABLE record_bodies_v4 (
        id TEXT PRIMARY KEY REFERENCES records (id),
        doc BLOB NOT NULL
    );
    INSERT INTO record_bodies_v4 (id, doc) SELECT id, doc FROM record_bodies;
    DROP TABLE record_bodies;
    ALTER TABLE record_bodies_v4 RENAME TO record_bodies;
    """,
    # 5: the operator page: login sessions (id kept as SHA-256, with the CSRF token) and
    # failed-login counts for lock-out
    """
    CREATE TABLE web_sessions (
        id_hash BLOB PRIMARY KEY,
        username TEXT NOT NULL REFERENCES operators (username) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        seen_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE login_failures (
        username TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        locked_until_ms INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    """,
    # 6: each peer's display name, from the certificate it showed in its last session
    """
    ALTER TABLE peers ADD COLUMN name TEXT;
    """,
    # 7: what sync refuses (decision 0020): per origin, the chunk this node refused for good
    # (peers are told, so they stop re-sending it); per peer, what this node refused of its
    # last session and what the peer says it refuses (JSON)
    """
    CREATE TABLE refused_chunks (
        origin BLOB PRIMARY KEY,
        seq INTEGER NOT NULL,
        reason TEXT NOT NULL,
        digest BLOB NOT NULL,
        at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    ALTER TABLE peers ADD COLUMN refused TEXT;
    ALTER TABLE peers ADD COLUMN refused_by_peer TEXT;
    """,
    # 8: office data (issue 14): an operator can be disabled (no login, no token) without
    # losing the name in the audit trail; pairs of households a verifier judged to be two
    # families although they share a NIK or No. KK ("keep both" on the Duplikat page); the
    # names of regions (village code -> province, regency, district, village) as imports
    # carry them, to show next to codes
    """
    CREATE TABLE regions (
        code TEXT PRIMARY KEY,
        provinsi TEXT NOT NULL,
        kabupaten TEXT NOT NULL,
        kecamatan TEXT NOT NULL,
        desa TEXT NOT NULL
    ) WITHOUT ROWID;
    ALTER TABLE operators ADD COLUMN disabled_ms INTEGER;
    CREATE TABLE duplicates_kept (
        first_id TEXT NOT NULL,
        second_id TEXT NOT NULL,
        username TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        PRIMARY KEY (first_id, second_id)
    ) WITHOUT ROWID;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def statements(script: str) -> list[str]:
    """Split a migration script into complete SQL statements (trigger bodies stay whole)."""
    result: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            result.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        result.append(buffer.strip())
    return result
