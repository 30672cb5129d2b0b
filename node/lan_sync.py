"""LAN sync of a running node: the mutual-TLS sync server, the engine and the scheduler.

Starts only on a node that belongs to a network (certificates come from its root);
listens on all interfaces on the sync port, because every connection must present a
certificate of this network before anything is exchanged. A connection that does not
finish its TLS handshake within HANDSHAKE_SECONDS is dropped, so a stranger on the WiFi
cannot hold the port's connections open; a member's idle connection lives KEEPALIVE_SECONDS.

A revocation takes effect at once, whoever made it: `simpul network revoke` or the Admin
page (both only write the revocation list file), a drive, or news from a peer or the hub.
Every handshake, every session request and every scheduler round first looks whether the
list file was replaced (one `stat`), and a poll does the same each second. A newer list
gets new TLS contexts (the listening one hands each handshake to the newest), the peer
check and the trust policy follow it, and running sessions with a revoked node are cut.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import web

from simpul.crypto.revocation import RevocationList, RevocationListRejected
from simpul.crypto.tls import client_context, follow_newest, server_context
from simpul.node import network_gossip
from simpul.node.http_guard import name_server
from simpul.node.membership import Membership, MembershipError, RevocationsWatch
from simpul.node.peers import Peer, PeerTable
from simpul.node.photo_sync import PhotoCourier, PhotoReport, add_photo_sync_routes, exchange_photos
from simpul.node.photos import Photos
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
# Without a certificate of this network nothing gets past the handshake: a client that has
# not finished it by then is a stranger or a dead link (asyncio's own default is 60 s).
HANDSHAKE_SECONDS = 10.0
REVOCATION_POLL_SECONDS = 1.0  # how soon a revocation cuts sessions nobody touches meanwhile


class LanSync:
    """The running LAN carrier of one node, and the network news it passes on."""

    def __init__(self, node: Node, membership: Membership) -> None:
        self.node = node
        self.engine, self.policy = network_engine(node, membership)
        self.news = network_gossip.NewsDesk(node.data_dir, membership, self.policy)
        self.trust = self.news.trust
        self.peers = PeerTable(node.db)
        self.watch = RevocationsWatch(node.data_dir)
        self._applied = membership.revocations.number  # the list the contexts were built for
        self._newest_server, self.client_context = self._contexts(membership.revocations)
        self.server_context = self._newest_server  # the listening one, for the port's life
        follow_newest(self.server_context, self._server_context_now)
        self.runner: web.AppRunner | None = None
        self.listener: asyncio.Server | None = None
        self.server: SyncServer | None = None
        self.scheduler: SyncScheduler | None = None
        self.uplink: Uplink | None = None
        self.photos = PhotoCourier(self._exchange_photos)
        self._poll: asyncio.Task[None] | None = None
        self.port = 0

    def _contexts(self, revocations: RevocationList) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        """Server and client contexts that refuse the nodes `revocations` names."""
        private = self.node.data_dir / TLS_DIR
        private.mkdir(mode=0o700, exist_ok=True)
        membership = self.membership
        identity = (self.node.key, membership.certificate.pem, membership.root_cert)
        return (
            server_context(*identity, revocations, private_dir=private, on_refused=self._refused),
            client_context(*identity, revocations, private_dir=private),
        )

    def _server_context_now(self) -> ssl.SSLContext:
        self.refresh()
        return self._newest_server

    def refresh(self) -> None:
        """Act on a revocation list newer than the one in force, at once: new contexts,
        the sessions with revoked nodes cut. Cheap when nothing changed (one `stat`)."""
        if self.watch.changed():
            try:
                self.news.reload()
            except (MembershipError, RevocationListRejected, OSError) as exc:
                log.error("revocation reload failed path=%s reason=%s", self.watch.path, exc)
        revocations = self.trust.revocations
        if revocations.number == self._applied:
            return
        try:
            self._newest_server, self.client_context = self._contexts(revocations)
        except (ssl.SSLError, OSError, ValueError) as exc:  # the peer check still refuses
            log.error("revocation contexts failed list=%d reason=%s", revocations.number, exc)
        self._applied = revocations.number
        cut = 0
        if self.scheduler is not None:
            self.scheduler.context = self.client_context
            cut += self.scheduler.cut(revocations)
        if self.server is not None:
            cut += self.server.cut(revocations)
        log.info("revocation applied list=%d sessions_cut=%d", revocations.number, cut)

    async def _poll_revocations(self) -> None:
        while True:
            await asyncio.sleep(REVOCATION_POLL_SECONDS)
            try:
                self.refresh()
            except Exception:
                log.exception("revocation poll failed")

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
                **({"hub_period": hub_period} if hub_period else {}), photos=node.photos,
            )  # fmt: skip
        gossip = lan.uplink.gossip if lan.uplink else None
        lan.server = SyncServer(
            lan.engine,
            lan.trust,
            busy,
            lan._served,
            lan.news,
            node.counters,
            gossip,
            refresh=lan.refresh,
        )
        name_server()
        app = lan.server.app()

        def photos_of_peer(request: web.Request) -> Photos:
            lan.server.authenticate(request)
            return node.photos

        add_photo_sync_routes(app, photos_of_peer)
        lan.runner = web.AppRunner(app, access_log=None, keepalive_timeout=KEEPALIVE_SECONDS)
        await lan.runner.setup()
        assert lan.runner.server is not None
        # aiohttp's TCPSite takes no handshake timeout; its low-level server is a protocol
        # factory for asyncio's own create_server, which does
        lan.listener = await asyncio.get_running_loop().create_server(
            lan.runner.server,
            SYNC_HOST,
            port,
            ssl=lan.server_context,
            ssl_handshake_timeout=HANDSHAKE_SECONDS,
        )
        lan.port = lan.listener.sockets[0].getsockname()[1]
        lan.scheduler = SyncScheduler(
            lan.engine,
            lan.peers,
            lan.client_context,
            lan.trust,
            busy,
            after_session=lan._after_session,
            counters=node.counters,
            gossip=gossip,
            refresh=lan.refresh,
            **({"period": period} if period else {}),
        )
        node.records.on_commit = lan.committed
        lan._poll = asyncio.create_task(lan._poll_revocations(), name="revocation-poll")
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
            refused=report.refusals,
            refused_by_peer=report.peer_refuses,
        )

    @property
    def membership(self) -> Membership:
        return self.news.membership

    async def _exchange_photos(self, address: str, node_id: str | None) -> PhotoReport:
        return await exchange_photos(
            f"https://{address}", self.client_context, self.trust, self.node.photos, node_id
        )

    async def _after_session(self, peer: Peer, report: SessionReport) -> None:
        """Start moving photo files in the background (records are done); fetch a peer's
        network news when it is newer than ours, and take it."""
        self.photos.after_session(peer.address, report.peer or peer.node_id)
        if not report.news or not network_gossip.is_newer(report.news, self.news.version()):
            return
        if self.news.take(await fetch_news(f"https://{peer.address}", self.client_context)):
            self.refresh()

    def on_peer(self, peer: Peer) -> None:
        if self.scheduler is not None:
            self.scheduler.peer_seen(peer)

    async def stop(self) -> None:
        await self.photos.stop()
        if self._poll is not None:
            self._poll.cancel()
            await asyncio.gather(self._poll, return_exceptions=True)
        if self.uplink is not None:
            await self.uplink.stop()
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.listener is not None:
            self.listener.close()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.listener is not None:
            await self.listener.wait_closed()
