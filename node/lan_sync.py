"""LAN sync of a running node: the mutual-TLS sync server, the engine and the scheduler.

Starts only on a node that belongs to a network (certificates come from its root);
listens on all interfaces on the sync port, because every connection must present a
certificate of this network before anything is exchanged.
"""

from __future__ import annotations

import logging

from aiohttp import web

from simpul.crypto.tls import client_context, server_context
from simpul.node import network_gossip
from simpul.node.membership import Membership
from simpul.node.peers import Peer, PeerTable
from simpul.node.runtime import Node
from simpul.node.sync_scheduler import SyncScheduler
from simpul.node.sync_session import SessionReport, SyncServer, fetch_news
from simpul.node.trust_policy import network_engine
from simpul.node.uplink import Uplink
from simpul.node.uplink_state import UplinkConfig

log = logging.getLogger(__name__)

SYNC_HOST = "0.0.0.0"
TLS_DIR = "tls"
KEEPALIVE_SECONDS = 3600  # a slow device may take long to read a large first sync


class LanSync:
    """The running LAN carrier of one node, and the network news it passes on."""

    def __init__(self, node: Node, membership: Membership) -> None:
        self.node = node
        self.engine, self.policy = network_engine(node, membership)
        self.news = network_gossip.NewsDesk(node.data_dir, membership, self.policy)
        self.trust = self.news.trust
        self.peers = PeerTable(node.db)
        private = node.data_dir / TLS_DIR
        private.mkdir(mode=0o700, exist_ok=True)
        contexts = (node.key, membership.certificate.pem, membership.root_cert)
        self.server_context = server_context(
            *contexts, membership.revocations, private_dir=private, on_refused=self._refused
        )
        self.client_context = client_context(*contexts, membership.revocations, private_dir=private)
        self.runner: web.AppRunner | None = None
        self.scheduler: SyncScheduler | None = None
        self.uplink: Uplink | None = None
        self.port = 0

    def _refused(self, _: object, reason: str, detail: str) -> None:
        """A client's TLS handshake failed: say so, and count it (`/metrics`)."""
        log.warning("tls handshake refused carrier=lan reason=%s detail=%s", reason, detail)
        self.node.counters.handshakes_refused[("lan", reason)] += 1

    def poke(self) -> None:
        """Sync with every LAN peer soon."""
        if self.scheduler is not None:
            self.scheduler.poke()

    def committed(self) -> None:
        """A local change was committed: tell the LAN, and the hub if this node uplinks."""
        self.poke()
        if self.uplink is not None:
            self.uplink.poke()

    @classmethod
    async def start(
        cls,
        node: Node,
        membership: Membership,
        port: int,
        period: float | None = None,
        hub: UplinkConfig | None = None,
        hub_period: float | None = None,
    ) -> LanSync:
        lan = cls(node, membership)
        busy: set[str] = set()
        if hub is not None and hub.hub is not None:
            lan.uplink = Uplink(
                node.data_dir, hub, lan.engine, lan.client_context, lan.news, lan.poke,
                **({"hub_period": hub_period} if hub_period else {}),
            )  # fmt: skip
        gossip = lan.uplink.gossip if lan.uplink else None
        server = SyncServer(
            lan.engine, lan.trust, busy, lan._served, lan.news, node.counters, gossip
        )
        lan.runner = web.AppRunner(
            server.app(), access_log=None, keepalive_timeout=KEEPALIVE_SECONDS
        )
        await lan.runner.setup()
        site = web.TCPSite(lan.runner, SYNC_HOST, port, ssl_context=lan.server_context)
        await site.start()
        lan.port = lan.runner.addresses[0][1]
        lan.scheduler = SyncScheduler(
            lan.engine,
            lan.peers,
            lan.client_context,
            lan.trust,
            busy,
            after_session=lan._after_session,
            counters=node.counters,
            gossip=gossip,
            **({"period": period} if period else {}),
        )
        node.records.on_commit = lan.committed
        await lan.scheduler.start()
        lan.scheduler.poke()
        if lan.uplink is not None:
            lan.uplink.start()
        log.info("lan sync listening node_id=%s port=%d", node.node_id, lan.port)
        return lan

    async def _served(self, report: SessionReport) -> None:
        await self.peers.mark_served(
            report.peer,
            report.remote,
            sent=report.sent,
            received=report.received,
            name=report.peer_name or None,
        )

    @property
    def membership(self) -> Membership:
        return self.news.membership

    async def _after_session(self, peer: Peer, report: SessionReport) -> None:
        """Fetch a peer's network news when it is newer than ours, and take it."""
        if not report.news or not network_gossip.is_newer(report.news, self.news.version()):
            return
        self.news.take(await fetch_news(f"https://{peer.address}", self.client_context))

    def on_peer(self, peer: Peer) -> None:
        if self.scheduler is not None:
            self.scheduler.peer_seen(peer)

    async def stop(self) -> None:
        if self.uplink is not None:
            await self.uplink.stop()
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.runner is not None:
            await self.runner.cleanup()
