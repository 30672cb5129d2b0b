"""When to sync with whom: every live peer of our network, on change and periodically.

A session starts with a peer when it is discovered, shortly after a local change
(debounced, so a burst of edits makes one session), after a session brought new entries
(so they travel on to the others), and every `period` seconds. A peer that fails is
retried with exponential back-off. Never two sessions with the same peer at once: the
scheduler and the sync server share one set of busy peers. A revoked peer is never
dialled, and `cut` ends the sessions running with peers a new revocation list names.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable

from simpul.crypto.revocation import RevocationList
from simpul.node.peers import FOREIGN, Peer, PeerTable
from simpul.node.sync_counters import BUSY, FAILED, OK, SyncCounters
from simpul.node.sync_session import (
    CARRIER,
    CLONE_ADVICE,
    Gossip,
    PeerBusy,
    SessionError,
    SessionReport,
    Trust,
    sync_with,
)
from simpul.sync.engine import SyncEngine

log = logging.getLogger(__name__)

PERIOD_SECONDS = 30.0
DEBOUNCE_SECONDS = 1.0
BACKOFF_START = 2.0
BACKOFF_MAX = 300.0
REVOKED = "node revoked by the network admin: not synced"


class SyncScheduler:
    """Starts sync sessions with the peers in the peers table."""

    def __init__(
        self,
        engine: SyncEngine,
        peers: PeerTable,
        context: ssl.SSLContext,
        trust: Trust,
        busy: set[str],
        period: float = PERIOD_SECONDS,
        debounce: float = DEBOUNCE_SECONDS,
        after_session: Callable[[Peer, SessionReport], Awaitable[None]] | None = None,
        counters: SyncCounters | None = None,
        gossip: Gossip | None = None,
        refresh: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.peers = peers
        self.context = context
        self.trust = trust
        self.busy = busy
        self.period = period
        self.debounce = debounce
        self.after_session = after_session
        self.counters = counters or SyncCounters()
        self.gossip = gossip
        self._refresh = refresh or (lambda: None)  # brings `trust` and `context` up to date
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sessions: dict[int, asyncio.Task[None]] = {}
        self._session_node: dict[int, str] = {}  # peer row id -> node id, known ones only
        self._retry_at: dict[int, float] = {}
        self._backoff: dict[int, float] = {}

    def poke(self) -> None:
        """Something changed (a local edit, a new peer): sync soon."""
        self._wake.set()

    def peer_seen(self, peer: Peer) -> None:
        if peer.id not in self._sessions:
            self.poke()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sync-scheduler")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._sessions.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.period * random.uniform(0.8, 1.2))
                await asyncio.sleep(self.debounce)  # let a burst of edits settle
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.round()
            except Exception:
                log.exception("sync round failed")

    def cut(self, revocations: RevocationList) -> int:
        """Cancel the running sessions with peers `revocations` names; how many."""
        cut = [
            peer_id
            for peer_id, node_id in self._session_node.items()
            if revocations.is_revoked(node_id) and peer_id in self._sessions
        ]
        for peer_id in cut:
            log.warning("sync session cut node_id=%s reason=revoked", self._session_node[peer_id])
            self._sessions[peer_id].cancel()
        return len(cut)

    async def round(self) -> None:
        """Start a session with every peer that is due, not busy and not revoked."""
        self._refresh()
        now = time.monotonic()
        for peer in await self.peers.list_all():
            if peer.state == FOREIGN or peer.node_id == self.engine.local_origin.hex():
                continue
            if peer.node_id and self.trust.revocations.is_revoked(peer.node_id):
                if peer.last_error != REVOKED:
                    log.info("sync skip peer=%s reason=revoked", peer.address)
                    await self.peers.mark_sync(peer.id, error=REVOKED)
                continue
            if peer.id in self._sessions or (peer.node_id and peer.node_id in self.busy):
                continue
            if self._retry_at.get(peer.id, 0.0) > now:
                continue
            self._sessions[peer.id] = asyncio.create_task(
                self._session(peer), name=f"sync-{peer.address}"
            )
            if peer.node_id:
                self._session_node[peer.id] = peer.node_id

    async def _session(self, peer: Peer) -> None:
        claimed = peer.node_id
        if claimed:
            self.busy.add(claimed)
        try:
            report = await sync_with(
                self.engine,
                f"https://{peer.address}",
                self.context,
                self.trust,
                expected_node_id=peer.node_id,
                gossip=self.gossip,
            )
        except PeerBusy:
            # the peer started a session with us meanwhile: nothing failed, try next round
            log.info("sync skipped peer=%s reason=peer busy with us", peer.address)
            self.counters.session(CARRIER, "client", BUSY)
        except SessionError as exc:
            delay = min(self._backoff.get(peer.id, BACKOFF_START / 2) * 2, BACKOFF_MAX)
            self._backoff[peer.id] = delay
            self._retry_at[peer.id] = time.monotonic() + delay
            log.warning("sync failed peer=%s retry_in=%.0fs reason=%s", peer.address, delay, exc)
            await self.peers.mark_sync(peer.id, error=str(exc)[:500])
            self.counters.session(CARRIER, "client", FAILED)
        else:
            self.counters.session(
                CARRIER, "client", OK, report.bytes_in, report.bytes_out, report.refused
            )
            self._backoff.pop(peer.id, None)
            self._retry_at.pop(peer.id, None)
            clone = (
                CLONE_ADVICE.format(origin=", ".join(sorted(report.forked)))
                if report.forked
                else None
            )
            await self.peers.mark_sync(
                peer.id,
                sent=report.sent,
                received=report.received,
                error=clone,
                node_id=report.peer,
                name=report.peer_name or None,
                refused=report.refusals,
                refused_by_peer=report.peer_refuses,
            )
            if report.received:
                self.poke()  # pass what we learnt on to the other peers
            if self.after_session is not None:
                try:
                    await self.after_session(peer, report)
                except SessionError as exc:
                    log.warning("sync news failed peer=%s reason=%s", peer.address, exc)
        finally:
            if claimed:
                self.busy.discard(claimed)
            self._sessions.pop(peer.id, None)
            self._session_node.pop(peer.id, None)
