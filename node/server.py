"""The node's HTTP face: builds the aiohttp application and runs it until stopped."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Callable
from functools import partial
from pathlib import Path

from aiohttp import web

from simpul.node.api import NODE_KEY, add_routes, bearer_auth, refuse_wrong_clock
from simpul.node.discovery import Discovery
from simpul.node.enroll_api import add_enroll_routes
from simpul.node.http_errors import answer_failures
from simpul.node.http_guard import PAGE_IDLE_SECONDS, name_server
from simpul.node.lan_sync import LanSync
from simpul.node.member_sync import MemberSync
from simpul.node.membership import load_membership
from simpul.node.metrics import add_metrics_routes
from simpul.node.peers import Peer, PeerTable
from simpul.node.runtime import DISCOVERY_ENV, Node, open_node
from simpul.node.systemd_notify import Notifier
from simpul.node.uplink_state import UplinkConfig
from simpul.node.usb_api import add_usb_routes
from simpul.node.usb_watcher import UsbWatcher
from simpul.node.web import add_web_routes, page_auth
from simpul.node.web_admin import add_admin_routes
from simpul.node.web_dashboard import add_dashboard_routes
from simpul.node.web_duplicates import add_duplicate_routes
from simpul.node.web_households import add_household_routes
from simpul.node.web_photos import add_photo_routes, photo_uploads

log = logging.getLogger(__name__)


def build_app(node: Node, usb: UsbWatcher | None = None) -> web.Application:
    app = web.Application(
        middlewares=[answer_failures, photo_uploads, page_auth, bearer_auth, refuse_wrong_clock],
        client_max_size=1024 * 1024,
    )
    app[NODE_KEY] = node
    name_server()
    add_web_routes(app)
    add_dashboard_routes(app)
    add_household_routes(app)
    add_photo_routes(app)
    add_duplicate_routes(app)
    add_admin_routes(app)
    add_routes(app)
    add_enroll_routes(app)
    add_metrics_routes(app)
    add_usb_routes(app, usb)
    return app


def network_id_of(data_dir: Path) -> str:
    """This node's network id, or "" while it has not joined one."""
    membership = load_membership(data_dir)
    return membership.network_id if membership is not None else ""


def discovery_for(
    node: Node, sync_port: int, on_peer: Callable[[Peer], None] | None
) -> Discovery | None:
    """LAN discovery for this node, unless $SIMPUL_DISCOVERY is "off"."""
    if os.environ.get(DISCOVERY_ENV, "").lower() == "off":
        log.info("discovery off node_id=%s reason=%s=off", node.node_id, DISCOVERY_ENV)
        return None
    network_id = partial(network_id_of, node.data_dir)
    return Discovery(node.node_id, network_id, sync_port, PeerTable(node.db), on_peer)


async def serve(
    data_dir: Path,
    host: str,
    port: int,
    ready: Callable[[str, int | None], None],
    sync_port: int | None = None,
    sync_period: float | None = None,
    usb_roots: list[Path] | None = None,
    uplink: UplinkConfig | None = None,
    hub_period: float | None = None,
) -> None:
    """Run the node on host:port until SIGINT/SIGTERM; `ready` gets the URL and the LAN sync
    port (None without a network) once listening.

    Discovery announces `sync_port` (default: the HTTP port + 1) on the LAN meanwhile; the
    USB watcher syncs drives mounted under its roots (plus `usb_roots`).
    """
    async with open_node(data_dir) as node:
        # photo files a crash left unreferenced (stored, then the change not written)
        await node.photos.index.collect()
        usb = UsbWatcher.from_environment(node, usb_roots or [])
        runner = web.AppRunner(
            build_app(node, usb), access_log=None, keepalive_timeout=PAGE_IDLE_SECONDS
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # the bound port for port 0
        bound = sockets[0].getsockname()[1] if sockets else port
        url = f"http://{host}:{bound}/"
        log.info("node serving node_id=%s url=%s data_dir=%s", node.node_id, url, data_dir)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        lan_port = bound + 1 if sync_port is None else sync_port
        member = MemberSync(
            node,
            lambda membership: LanSync.start(
                node, membership, lan_port, sync_period, uplink, hub_period
            ),
        )
        await member.start()
        if member.lan is None and uplink is not None and uplink.hub is not None:
            log.warning("uplink off node_id=%s reason=no network yet", node.node_id)
        # what start-up made lives as long as the process: a full GC pass during a sync
        # flood need not walk it again (it was the longest pause of the event loop)
        gc.collect()
        gc.freeze()
        ready(url, member.lan.port if member.lan else None)
        notifier = Notifier.from_environment()
        notifier.ready(f"serving {url}")
        watchdog = asyncio.create_task(notifier.run_watchdog())
        discovery = discovery_for(node, member.lan.port if member.lan else lan_port, member.on_peer)
        if discovery is not None:
            await discovery.start()
        usb.start()
        try:
            await stop.wait()
        finally:
            log.info("node stopping node_id=%s", node.node_id)
            notifier.stopping()
            watchdog.cancel()
            await usb.stop()
            if discovery is not None:
                await discovery.stop()
            await member.stop()
            await runner.cleanup()
