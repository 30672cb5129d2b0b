"""The hub role (`simpul hub`): the district's sync server for the offices of many networks.

The same sessions as on the LAN (`node/sync_session.py`: pull, push, network news) over
mutual TLS 1.3, but no discovery, and one listening address for every network the hub
trusts (`node/hub_networks.py`). A node names its network in the TLS server name; the hub
answers with the certificate that network's root signed for it, so the node can check it
is talking to its own hub. Every served network trusts every root the hub knows in the
handshake, so that a node of another network gets past TLS and is refused by the same
check a LAN node makes (`check_peer`): with a reason that is logged and counted. Revoked
nodes are refused there too, against the newest revocation list the hub has (the lists
travel to the hub as network news from the uplinks).

Each network's entries are verified back to its root and its origins' write scopes by
that network's `CertificateTrust`, stored by a `HubStore` and applied to the network's
records. Refusals (of a session or of chunks) are counted per network, node and reason and
shown in `GET /api/v1/status` and `/metrics` on the hub's loopback HTTP port.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from simpul.crypto.node_key import NodeKey
from simpul.crypto.tls import server_context
from simpul.node.hub_networks import (
    HubError,
    network_folder,
    network_of_server_name,
    trusted_networks,
)
from simpul.node.hub_store import HubStore, NetworkStore, SqliteHubStore
from simpul.node.lan_sync import KEEPALIVE_SECONDS, TLS_DIR
from simpul.node.membership import Membership
from simpul.node.metrics import CONTENT_TYPE, from_loopback, sample
from simpul.node.network_gossip import NewsDesk
from simpul.node.photo_sync import add_photo_sync_routes
from simpul.node.photos import Photos
from simpul.node.runtime import KEY_FILE, prepare_data_dir
from simpul.node.sync_session import NEWS, PULL, PUSH, SessionReport, SyncServer
from simpul.node.systemd_notify import Notifier

log = logging.getLogger(__name__)

MAX_NEWS_BYTES = 4 * 1024 * 1024
UNKNOWN = ""  # the node id of a refusal before any certificate was seen


@dataclass
class NodeCounts:
    """What the hub exchanged with one node of one network since it started."""

    sessions: int = 0
    entries_in: int = 0
    entries_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    last_seen_ms: int = 0


@dataclass
class Counters:
    """Sessions per node and refusals per (network, node, reason); in memory."""

    nodes: dict[tuple[str, str], NodeCounts] = field(default_factory=dict)
    refusals: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def refused(self, network_id: str, node_id: str, reason: str, count: int) -> None:
        self.refusals[(network_id, node_id, reason)] += count

    def served(self, network_id: str, report: SessionReport) -> None:
        counts = self.nodes.setdefault((network_id, report.peer), NodeCounts())
        counts.sessions += 1
        counts.entries_in += report.received
        counts.entries_out += report.sent
        counts.bytes_in += report.bytes_in
        counts.bytes_out += report.bytes_out
        counts.last_seen_ms = int(time.time() * 1000)


@dataclass
class ServedNetwork:
    """One network the running hub serves."""

    network_id: str
    news: NewsDesk
    store: NetworkStore
    server: SyncServer
    context: ssl.SSLContext


class Hub:
    """Every network a hub serves, behind one mutual-TLS address."""

    def __init__(self, hub_dir: Path, key: NodeKey, store: HubStore) -> None:
        self.hub_dir = hub_dir
        self.key = key
        self.store = store
        self.counters = Counters()
        self.networks: dict[str, ServedNetwork] = {}
        self._by_context: dict[int, ServedNetwork] = {}

    async def open(self) -> None:
        members = trusted_networks(self.hub_dir)
        if not members:
            raise HubError(
                "this hub trusts no network yet: run 'simpul hub trust ROOT_CERT --grant GRANT'"
            )
        roots = b"\n".join(m.root_cert for m in members.values())
        for network_id, member in members.items():
            self._add(network_id, member, roots, await self._engine(member))
        log.info("hub networks=%s", ",".join(self.networks))

    async def _engine(self, member: Membership) -> tuple[NewsDesk, NetworkStore]:
        news = NewsDesk(network_folder(self.hub_dir, member.network_id), member)
        return news, await self.store.open_network(member, news.policy)

    def _add(
        self,
        network_id: str,
        member: Membership,
        roots: bytes,
        opened: tuple[NewsDesk, NetworkStore],
    ) -> None:
        news, store = opened
        private = self.hub_dir / TLS_DIR
        private.mkdir(mode=0o700, exist_ok=True)
        # every root in the handshake: another network's node is refused after it, counted
        context = server_context(
            self.key, member.certificate.pem, roots, None, private_dir=private,
            on_refused=functools.partial(self._handshake_refused, network_id),
        )  # fmt: skip
        server = SyncServer(
            store,  # type: ignore[arg-type]  # a NetworkStore is what sessions use of an engine
            news.trust,
            news=news,
            on_refused=lambda node, reason, n: self._refused(network_id, node, reason, n),
            on_report=lambda report: self.counters.served(network_id, report),
            staged=store.staging.frontier,
        )
        served = ServedNetwork(network_id, news, store, server, context)
        self.networks[network_id] = served
        self._by_context[id(context)] = served

    def _refused(self, network_id: str, node_id: str, reason: str, count: int) -> None:
        log.warning(
            "hub refuse network_id=%s node_id=%s reason=%s count=%d",
            network_id,
            node_id or "?",
            reason,
            count,
        )
        self.counters.refused(network_id, node_id, reason, count)

    def _handshake_refused(
        self, network_id: str, _: ssl.SSLContext, reason: str, detail: str
    ) -> None:
        """A client's TLS handshake failed (no certificate, an unknown root's, not TLS 1.3):
        logged, and counted with the network it named, reason `tls-<reason>`."""
        log.warning(
            "hub tls handshake refused network_id=%s reason=%s detail=%s",
            network_id,
            reason,
            detail,
        )
        self.counters.refused(network_id, UNKNOWN, f"tls-{reason}", 1)

    def tls_context(self) -> ssl.SSLContext:
        """The listening context: picks each network's context by the TLS server name."""
        first = next(iter(self.networks.values())).context

        def pick(ssl_object: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> int | None:
            served = self.networks.get(network_of_server_name(name))
            if served is None:
                self._refused(UNKNOWN, UNKNOWN, "network", 1)
                log.warning("hub refuse server_name=%s reason=not a network this hub serves", name)
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            ssl_object.context = served.context
            return None

        first.sni_callback = pick
        return first

    def _served(self, request: web.Request) -> ServedNetwork:
        assert request.transport is not None
        ssl_object = request.transport.get_extra_info("ssl_object")
        served = self._by_context.get(id(getattr(ssl_object, "context", None)))
        if served is None:
            raise web.HTTPMisdirectedRequest(text="name a network in the TLS server name")
        return served

    async def pull(self, request: web.Request) -> web.StreamResponse:
        return await self._served(request).server.pull(request)

    async def push(self, request: web.Request) -> web.StreamResponse:
        return await self._served(request).server.push(request)

    async def news_offer(self, request: web.Request) -> web.StreamResponse:
        return await self._served(request).server.network_news(request)

    async def news_take(self, request: web.Request) -> web.Response:
        """An uplink hands over newer network news (revocations): verified, then taken."""
        served = self._served(request)
        served.server.authenticate(request)
        offered = await request.content.read(MAX_NEWS_BYTES)
        taken = served.news.take(offered)
        return web.json_response({"taken": taken, "version": served.news.version()})

    def photos_of_peer(self, request: web.Request) -> Photos:
        """The photos of the network the request names, for a member of it."""
        served = self._served(request)
        served.server.authenticate(request)
        return self.store.photos(served.network_id)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_NEWS_BYTES)
        app.router.add_post(PULL, self.pull)
        app.router.add_post(PUSH, self.push)
        app.router.add_get(NEWS, self.news_offer)
        app.router.add_post(NEWS, self.news_take)
        add_photo_sync_routes(app, self.photos_of_peer)
        return app

    async def status(self) -> dict[str, Any]:
        networks = []
        for network_id, served in self.networks.items():
            nodes = {
                node: asdict(counts)
                for (net, node), counts in sorted(self.counters.nodes.items())
                if net == network_id
            }
            refusals: Counter[str] = Counter()
            for (net, _, reason), count in self.counters.refusals.items():
                if net == network_id:
                    refusals[reason] += count
            networks.append(
                {
                    "network_id": network_id,
                    **await self.store.counts(network_id),
                    "origins": len(await served.store.frontier()),
                    "revocations": served.news.membership.revocations.number,
                    "nodes": nodes,
                    "in_session": sorted(served.server.in_session),
                    "refusals": dict(refusals),
                }
            )
        foreign = sum(n for (net, _, _), n in self.counters.refusals.items() if not net)
        return {
            "role": "hub",
            "node_id": self.key.node_id_hex,
            "networks": networks,
            "refused_unknown_network": foreign,
        }


def render_metrics(status: dict[str, Any], refusals: Counter[tuple[str, str, str]]) -> str:
    """The hub's counts in the Prometheus text format (as `node/metrics.py` writes it)."""
    families: list[tuple[str, str, str, list[str]]] = [
        ("simpul_hub_records", "gauge", "Household records held, per network.",
         [sample("simpul_hub_records", n["records"], {"network_id": n["network_id"]})
          for n in status["networks"]]),
        ("simpul_hub_entries", "gauge", "Feed entries held, per network.",
         [sample("simpul_hub_entries", n["entries"], {"network_id": n["network_id"]})
          for n in status["networks"]]),
    ]  # fmt: skip
    for metric, help_text in (
        ("sessions", "Sessions served per node."),
        ("entries_in", "Entries received from each node."),
        ("entries_out", "Entries sent to each node."),
        ("bytes_in", "Bundle bytes received from each node."),
        ("bytes_out", "Bundle bytes sent to each node."),
    ):
        name = f"simpul_hub_node_{metric}_total"
        samples = [
            sample(name, counts[metric], {"network_id": n["network_id"], "node_id": node})
            for n in status["networks"]
            for node, counts in n["nodes"].items()
        ]
        families.append((name, "counter", help_text, samples))
    name = "simpul_hub_refusals_total"
    samples = [
        sample(name, count, {"network_id": net, "node_id": node, "reason": reason})
        for (net, node, reason), count in sorted(refusals.items())
    ]
    families.append((name, "counter", "Refusals per network, node and reason.", samples))
    lines = []
    for family, kind, help_text, rows in families:
        lines += [f"# HELP {family} {help_text}", f"# TYPE {family} {kind}", *rows]
    return "\n".join(lines) + "\n"


def status_app(hub: Hub) -> web.Application:
    """`GET /api/v1/status` and `GET /metrics`, for loopback clients only."""

    @web.middleware
    async def loopback_only(request: web.Request, handler: Any) -> web.StreamResponse:
        if not from_loopback(request):
            raise web.HTTPForbidden(text="the hub's status is served on loopback only")
        return await handler(request)

    async def status(request: web.Request) -> web.Response:
        return web.json_response(await hub.status())

    async def metrics(request: web.Request) -> web.Response:
        text = render_metrics(await hub.status(), hub.counters.refusals)
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application(middlewares=[loopback_only])
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/metrics", metrics)
    return app


async def _site(runner: web.AppRunner, host: str, port: int, **kwargs: Any) -> int:
    await runner.setup()
    site = web.TCPSite(runner, host, port, **kwargs)
    await site.start()
    return runner.addresses[0][1]


async def serve_hub(
    hub_dir: Path,
    listen: tuple[str, int],
    status_listen: tuple[str, int],
    ready: Callable[[int, int], None],
) -> None:
    """Run the hub until SIGINT/SIGTERM; `ready` gets the sync and status ports."""
    prepare_data_dir(hub_dir)
    key = NodeKey.load_or_create(hub_dir / KEY_FILE)
    store = SqliteHubStore(hub_dir, key)
    hub = Hub(hub_dir, key, store)
    runners: list[web.AppRunner] = []
    notifier = Notifier.from_environment()
    try:
        await hub.open()
        sync_runner = web.AppRunner(hub.app(), access_log=None, keepalive_timeout=KEEPALIVE_SECONDS)
        status_runner = web.AppRunner(status_app(hub), access_log=None)
        runners += [sync_runner, status_runner]
        port = await _site(sync_runner, *listen, ssl_context=hub.tls_context())
        status_port = await _site(status_runner, *status_listen)
        log.info(
            "hub serving node_id=%s port=%d status_port=%d", key.node_id_hex, port, status_port
        )
        ready(port, status_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        notifier.ready(f"hub serving port {port}")
        watchdog = asyncio.create_task(notifier.run_watchdog())
        await stop.wait()
        watchdog.cancel()
    finally:
        log.info("hub stopping node_id=%s", key.node_id_hex)
        notifier.stopping()
        for runner in runners:
            await runner.cleanup()
        await store.close()
