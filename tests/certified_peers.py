"""Test helpers: a network root and nodes it certified, each a real store and sync engine."""

from __future__ import annotations

from pathlib import Path

from sync_peers import Peer

from simpul.crypto.network_root import NetworkRoot
from simpul.crypto.node_certificate import issue_node_certificate
from simpul.crypto.node_key import NodeKey
from simpul.crypto.revocation import empty_revocation_list
from simpul.node.trust_policy import CertificateTrust
from simpul.sync.database import Database
from simpul.sync.engine import SyncEngine
from simpul.sync.store import RecordStore


class Network:
    """A network root and the nodes it certified, each with its own SQLite store."""

    def __init__(self, base: Path, root: NetworkRoot) -> None:
        self.base = base
        self.root = root
        self.revocations = empty_revocation_list(root)
        self.peers: list[Peer] = []
        self.certificates: dict[bytes, bytes] = {}

    async def node(
        self,
        scope: list[str],
        certified: bool = True,
        key: NodeKey | None = None,
        home: Path | None = None,
    ) -> Peer:
        """A new node (its own store, under `home` if given: e.g. a small disk); `key`
        given: a clone of that node's identity."""
        key = key or NodeKey.generate()
        certificate = (
            issue_node_certificate(self.root, key.public_bytes, f"n{len(self.peers)}", "office",
                                   scope)
            if certified
            else b""
        )  # fmt: skip
        db = await Database.open((home or self.base) / f"node{len(self.peers)}" / "simpul.db")
        engine = SyncEngine(
            db,
            key.node_id,
            CertificateTrust(self.root.cert_pem, self.revocations),
            network_id=bytes.fromhex(self.root.network_id),
            certificate=certificate,
        )
        peer = Peer(key, db, RecordStore(db, key.node_id, key.public_bytes, key.sign), engine)
        self.peers.append(peer)
        self.certificates[key.node_id] = certificate
        return peer

    async def close(self) -> None:
        for peer in self.peers:
            await peer.db.close()
