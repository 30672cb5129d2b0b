"""Test helpers: several real nodes (own SQLite file, key, store, engine) syncing in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from simpul.crypto.node_key import NodeKey
from simpul.sync.bundle import Frame, decode_bundle
from simpul.sync.database import Database
from simpul.sync.engine import IngestReport, OpenTrust, SyncEngine, TrustPolicy
from simpul.sync.frontier import Frontier
from simpul.sync.record_doc import RecordDoc
from simpul.sync.store import RecordStore


@dataclass
class Peer:
    """One node: its database, record store and sync engine."""

    key: NodeKey
    db: Database
    records: RecordStore
    engine: SyncEngine

    @property
    def origin(self) -> bytes:
        return self.key.node_id

    async def bundle_for(self, other: Peer | None) -> bytes:
        """What `other` lacks of this node's feeds (everything for None), as one bundle."""
        frontier = await other.engine.frontier() if other else Frontier()
        return b"".join([chunk async for chunk in self.engine.outgoing(frontier)])

    async def state(self) -> tuple[Frontier, dict[str, list[str]]]:
        """Frontier, and every record's Automerge heads, for convergence checks."""
        rows = await self.db.fetchall("SELECT id, doc FROM record_bodies ORDER BY id")
        heads = {rid: sorted(h.hex() for h in RecordDoc.load(data).heads) for rid, data in rows}
        return await self.engine.frontier(), heads

    async def frames_for(self, other: Peer | None) -> list[Frame]:
        return decode_bundle(await self.bundle_for(other))


async def sync_one_way(source: Peer, target: Peer) -> IngestReport:
    return await target.engine.ingest(await source.frames_for(target))


async def sync_both_ways(a: Peer, b: Peer) -> None:
    await sync_one_way(a, b)
    await sync_one_way(b, a)


@asynccontextmanager
async def open_peers(
    base: Path, count: int, trust: TrustPolicy | None = None
) -> AsyncIterator[list[Peer]]:
    """`count` nodes with data dirs under `base`, closed afterwards."""
    peers: list[Peer] = []
    try:
        for index in range(count):
            key = NodeKey.generate()
            db = await Database.open(base / f"node{index}" / "simpul.db")
            records = RecordStore(db, key.node_id, key.public_bytes, key.sign)
            engine = SyncEngine(db, key.node_id, trust or OpenTrust())
            peers.append(Peer(key, db, records, engine))
        yield peers
    finally:
        for peer in peers:
            await peer.db.close()
