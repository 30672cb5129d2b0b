"""A node's open state: data dir, identity key, database, record store and operator accounts.

The CLI and the server both open a node through `open_node`; several processes may open
the same data dir at once (the database serialises their writes).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from simpul.crypto.node_key import NodeKey
from simpul.node.clock_floor import ClockFloor, load_floor, release_floor
from simpul.node.membership import load_membership
from simpul.node.photos import Photos
from simpul.node.sync_counters import SyncCounters
from simpul.sync.database import DB_FILE, Database
from simpul.sync.operators import Operators
from simpul.sync.store import RecordStore

DATA_DIR_ENV = "SIMPUL_DATA_DIR"
DISCOVERY_ENV = "SIMPUL_DISCOVERY"  # "off": no LAN announcements (tests, the hub role)
KEY_FILE = "node.key"


def default_data_dir() -> Path:
    """$SIMPUL_DATA_DIR, else the per-user data dir ($XDG_DATA_HOME/simpul)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "simpul"


@dataclass
class Node:
    """Everything a command or the server needs of one node."""

    data_dir: Path
    key: NodeKey
    db: Database
    records: RecordStore
    operators: Operators
    clock: ClockFloor = field(default_factory=release_floor)
    counters: SyncCounters = field(default_factory=SyncCounters)

    @property
    def node_id(self) -> str:
        return self.key.node_id_hex

    @cached_property
    def photos(self) -> Photos:
        """The house photos (files under the data dir), opened on first use."""
        return Photos(self.data_dir, self.db, self.records)


def prepare_data_dir(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


@asynccontextmanager
async def open_node(data_dir: Path, key: NodeKey | None = None) -> AsyncIterator[Node]:
    """Open (creating on first use) the node whose state lives in `data_dir`; a hub gives
    its own `key` for the folder of each network it serves."""
    prepare_data_dir(data_dir)
    key = key or NodeKey.load_or_create(data_dir / KEY_FILE)
    db = await Database.open(data_dir / DB_FILE)
    try:
        membership = load_membership(data_dir)
        clock = await load_floor(db, key.node_id, membership)
        records = RecordStore(db, key.node_id, key.public_bytes, key.sign, clock=clock.now_ms)
        if membership is not None:
            records.scope = membership.certificate.scope
        yield Node(data_dir, key, db, records, Operators(db), clock)
    finally:
        await db.close()
