"""LAN sync and the uplink for whatever network the running node belongs to right now.

`simpul network create`, `enroll install`, `network rejoin` (and a restore into the data
dir) change the node's membership files while `simpul node` may be running. `MemberSync`
starts LAN sync (with the uplink, if a hub is configured) when the node is a member,
and watches the node certificate file (its presence means "member", node/membership.py):
when it appears, changes or goes, the running node stops what it ran, applies the new
write scope to its store, and starts again, logging `lan sync on/off … reason=…`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from simpul.node.lan_sync import LanSync
from simpul.node.membership import (
    NODE_CERT,
    Membership,
    MembershipError,
    load_membership,
    network_dir,
)
from simpul.node.peers import Peer
from simpul.node.runtime import Node

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0

Marker = tuple[int, int] | None  # the node certificate's mtime and size; None: no network


class MemberSync:
    """Owns the node's `LanSync` across membership changes; see the module docstring."""

    def __init__(self, node: Node, start_lan: Callable[[Membership], Awaitable[LanSync]]) -> None:
        self.node = node
        self._start_lan = start_lan
        self.lan: LanSync | None = None
        self._marker: Marker = None
        self._watch: asyncio.Task[None] | None = None

    def _current_marker(self) -> Marker:
        try:
            info = (network_dir(self.node.data_dir) / NODE_CERT).stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    async def start(self) -> None:
        """Start for the membership the node has now, then follow its changes."""
        self._marker = self._current_marker()
        await self._apply("start")
        self._watch = asyncio.create_task(self._follow())

    async def _apply(self, reason: str) -> None:
        try:
            membership = load_membership(self.node.data_dir)
        except MembershipError as exc:  # files half-written: the next poll sees them whole
            log.warning("lan sync waits node_id=%s reason=%s", self.node.node_id, exc)
            return
        if self.lan is not None:
            await self.lan.stop()
            self.lan = None
        self.node.records.scope = membership.certificate.scope if membership else None
        if membership is None:
            log.info("lan sync off node_id=%s reason=%s: no network", self.node.node_id, reason)
            return
        self.lan = await self._start_lan(membership)
        log.info(
            "lan sync on node_id=%s network_id=%s port=%d reason=%s",
            self.node.node_id,
            membership.network_id,
            self.lan.port,
            reason,
        )

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            marker = self._current_marker()
            if marker != self._marker:
                self._marker = marker
                try:
                    await self._apply("membership changed")
                except Exception:  # the watch must outlive one bad start; the next change retries
                    log.exception("lan sync restart failed node_id=%s", self.node.node_id)

    def on_peer(self, peer: Peer) -> None:
        """Discovery's hook: a peer of our network was heard."""
        if self.lan is not None:
            self.lan.on_peer(peer)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.lan is not None:
            await self.lan.stop()
            self.lan = None
