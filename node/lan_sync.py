"""LAN sync of a running node: the mutual-TLS sync server, the engine and the scheduler.

Starts only on a node that belongs to a network (certificates come from its root);
listens on all interfaces on the sync port, because every connection must present a
certificate of this network before anything is exchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from simpul.crypto.tls import client_context, server_context
from simpul.node.membership import Membership
from simpul.node.peers import Peer, PeerTable
from simpul.node.runtime import Node
from simpul.node.sync_scheduler import SyncScheduler
from simpul.node.sync_session import SessionReport, SyncServer, Trust
from simpul.node.trust_policy import CertificateTrust
from simpul.sync.engine import SyncEngine

log = logging.getLogger(__name__)

SYNC_HOST = "0.0.0.0"
TLS_DIR = "tls"


@dataclass
class LanSync:
    """The running LAN carrier of one node."""

    engine: SyncEngine
    scheduler: SyncScheduler
    runner: web.AppRunner
    port: int

    @classmethod
    async def start(
        cls, node: Node, membership: Membership, port: int, period: float | None = None
    ) -> LanSync:
        private = node.data_dir / TLS_DIR
        private.mkdir(mode=0o700, exist_ok=True)
        certificate = membership.certificate.pem
        engine = SyncEngine(
            node.db,
            node.key.node_id,
            CertificateTrust.of(membership),
            network_id=bytes.fromhex(membership.network_id),
            certificate=certificate,
        )
        trust = Trust(membership.root_cert, membership.revocations)
        busy: set[str] = set()
        contexts = (node.key, certificate, membership.root_cert, membership.revocations)
        peers = PeerTable(node.db)

        async def served(report: SessionReport) -> None:
            await peers.mark_served(report.peer, sent=report.sent, received=report.received)

        server = SyncServer(engine, trust, busy, served)
        runner = web.AppRunner(server.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(
            runner, SYNC_HOST, port, ssl_context=server_context(*contexts, private_dir=private)
        )
        await site.start()
        bound = runner.addresses[0][1]
        scheduler = SyncScheduler(
            engine,
            peers,
            client_context(*contexts, private_dir=private),
            trust,
            busy,
            **({"period": period} if period else {}),
        )
        node.records.on_commit = scheduler.poke
        await scheduler.start()
        scheduler.poke()
        log.info("lan sync listening node_id=%s port=%d", node.node_id, bound)
        return cls(engine, scheduler, runner, bound)

    def on_peer(self, peer: Peer) -> None:
        self.scheduler.peer_seen(peer)

    async def stop(self) -> None:
        await self.scheduler.stop()
        await self.runner.cleanup()
