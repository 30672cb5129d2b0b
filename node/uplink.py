"""The uplink of a running node: at most one node of an office talks to the hub.

Role election rides on LAN sync. Every LAN session carries, both ways, the header
`X-Simpul-Uplink: <node id>.<term>.<hub frontier>` (`Gossip`): the node that uplinks, a
counter it raises every third of the lease (each raise pokes LAN sync, so it spreads at
once), and the hub frontier in base64 (the frontier encoding of docs/protocol.md).

- A node that has heard another node's term rise within the lease (`uplink.json`,
  `simpul node --uplink-lease`, 30 s by default) stands by: it never connects to the
  hub, so an office spends its quota through one node only.
- Otherwise it checks the hub cheaply (a TCP connect, no TLS, no data) with back-off
  while unreachable (up to half the lease); the first node that reaches the hub takes the
  role. If two claim at once, the lower node id keeps it and the other stands by as soon
  as it hears.
- When the uplink vanishes, its term stops rising and, a lease later, a node with a link
  takes over (within a minute with the default lease).

The uplink runs a round (`node/uplink_session.py`) whenever this node's frontier is ahead
of the hub frontier, and every `hub_period` seconds to bring the hub's changes down. After
a round that finished its records, house photos go up and come down (`node/photo_sync.py`):
thumbnails only unless `full_photos` is set, each file only while the budget allows; a cut
upload resumes with the files the hub still lacks, never resending one it holds. The
byte budget is checked before every piece: when today's or this month's bytes are spent
the uplink stops, says so in the log and the status, and starts again the next day/month.
Rounds share one kept connection to the hub (`HubLink`), and a new one resumes the TLS
session of the last, so a quiet round costs a request and an answer, not a handshake;
the budget is charged every byte the link's meter saw, between rounds included.
Every node keeps the hub frontier it hears, so each record can say whether the hub holds
its latest change (`_meta.delivered`, `node/delivery.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from simpul.node import uplink_state
from simpul.node.hub_networks import server_name
from simpul.node.network_gossip import NewsDesk, is_newer
from simpul.node.photo_sync import PhotoSyncError, exchange_photos
from simpul.node.photos import Photos
from simpul.node.sync_session import Dial, SessionError, frontier_header, parse_frontier_header
from simpul.node.uplink_session import HubLink, Meter, hub_round, post_news
from simpul.sync.engine import SyncEngine
from simpul.sync.frontier import Frontier, FrontierError
from simpul.sync.photos import FULL, THUMB

log = logging.getLogger(__name__)

HUB_PERIOD_SECONDS = 300.0
PROBE_TIMEOUT = 5.0
BUDGET_RECHECK_SECONDS = 60.0


class UplinkGossip:
    """Who uplinks and what the hub holds, as heard over LAN sync and announced back."""

    def __init__(
        self,
        node_id: str,
        state: uplink_state.UplinkState,
        lease: float = uplink_state.LEASE_SECONDS,
    ) -> None:
        self.node_id = node_id
        self.state = state
        self.lease = lease
        self.term = 0
        self.claiming = False
        self.heard: dict[str, tuple[int, float]] = {}  # node id -> (term, monotonic time)
        self.on_learn: Callable[[], None] = lambda: None

    def _holder(self) -> tuple[str, int] | None:
        if self.claiming:
            return self.node_id, self.term
        fresh = self.fresh_other()
        return (fresh, self.heard[fresh][0]) if fresh else None

    def announce(self) -> str:
        holder = self._holder()
        claim = f"{holder[0]}.{holder[1]}" if holder else "."
        frontier = frontier_header(self.state.frontier())
        return f"{claim}.{frontier}"

    def hear(self, value: str) -> None:
        try:
            node_id, term_text, frontier_text = value.split(".")
            frontier = parse_frontier_header(frontier_text)
            term = int(term_text) if term_text else 0
        except (ValueError, FrontierError) as exc:
            log.info("uplink gossip ignored reason=%s", exc)
            return
        if node_id and node_id != self.node_id and term > self.heard.get(node_id, (0, 0.0))[0]:
            self.heard[node_id] = (term, time.monotonic())
        if self.state.learn(frontier):
            self.on_learn()

    def fresh_other(self) -> str | None:
        """The lowest other node id whose term rose within the lease, if any."""
        now = time.monotonic()
        fresh = [n for n, (_, at) in self.heard.items() if now - at < self.lease]
        return min(fresh) if fresh else None

    def should_stand_by(self) -> str | None:
        other = self.fresh_other()
        if other is None or (self.claiming and self.node_id < other):
            return None
        return other


class Uplink:
    """The uplink task of one node (runs on every node; acts on the elected one)."""

    def __init__(
        self,
        data_dir: Path,
        config: uplink_state.UplinkConfig,
        engine: SyncEngine,
        dial_context: object,
        news: NewsDesk,
        poke_lan: Callable[[], None],
        hub_period: float = HUB_PERIOD_SECONDS,
        photos: Photos | None = None,
    ) -> None:
        assert config.hub is not None
        self.photos = photos
        self.data_dir = data_dir
        self.config = config
        self.engine = engine
        self.news = news
        self.poke_lan = poke_lan
        self.hub_period = hub_period
        self.state = uplink_state.load_state(data_dir)
        lease = config.lease_seconds
        self.refresh = lease / 3  # the term rises three times per lease
        self.backoff_max = lease / 2  # a node given a link notices within half a lease
        self.gossip = UplinkGossip(engine.local_origin.hex(), self.state, lease)
        self.gossip.on_learn = self._save
        network_id = engine.network_id.hex()
        self.dial = Dial(
            config.hub,
            dial_context,  # type: ignore[arg-type]
            news.trust,
            server_hostname=server_name(network_id),
        )
        self.meter = Meter()  # every byte to and from the hub, since start
        self.link = HubLink(self.dial, self.meter)  # kept between rounds (uplink_session.py)
        self._charged = 0  # of the meter's bytes, those already charged to the budget
        parts = urlsplit(config.hub)
        self.host, self.port = parts.hostname or "", parts.port or 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_round = 0.0
        self._backoff = self.backoff_max / 6

    def _save(self) -> None:
        uplink_state.save_state(self.data_dir, self.state)

    def _set(self, state: str, error: str | None = None) -> None:
        if state != self.state.state:
            log.info("uplink state=%s hub=%s reason=%s", state, self.config.hub, error or "-")
        self.state.state = state
        self.state.last_error = error
        self._save()

    def poke(self) -> None:
        """A local change was committed: the uplink should send it soon."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="uplink")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.link.close()
        self._charge()

    def _charge(self) -> None:
        """Charge the budget what crossed the link since the last charge, and save."""
        spent, self._charged = self.meter.total - self._charged, self.meter.total
        self.state.charge(spent, datetime.now())
        self._save()

    def budget_spent(self) -> str | None:
        """Why the budget allows nothing more now, or None."""
        self.state.roll(datetime.now())
        day, month = self.config.budget_day, self.config.budget_month
        if day is not None and self.state.bytes_day >= day:
            return f"today's budget of {day} bytes is spent ({self.state.bytes_day})"
        if month is not None and self.state.bytes_month >= month:
            return f"this month's budget of {month} bytes is spent ({self.state.bytes_month})"
        return None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _run(self) -> None:
        while True:
            try:
                await self._sleep(await self.step())
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round must not end the uplink for good
                log.exception("uplink step failed")
                await self._sleep(self.backoff_max)

    async def step(self) -> float:
        """One decision of the uplink; the seconds to wait before the next."""
        spent = self.budget_spent()
        if spent is not None:
            self.gossip.claiming = False
            self._set("budget", spent)
            return BUDGET_RECHECK_SECONDS
        other = self.gossip.should_stand_by()
        if other is not None:
            if self.gossip.claiming:
                log.info("uplink stand down for node_id=%s", other)
                await self.link.close()
                self._charge()
            self.gossip.claiming = False
            self.state.uplink_node = other
            self._set("standby")
            return self.refresh / 3
        if not self.gossip.claiming and not await self.reachable():
            self._backoff = min(self._backoff * 2, self.backoff_max)
            return self._backoff * random.uniform(0.8, 1.0)
        self._backoff = self.backoff_max / 6
        if not self.gossip.claiming:
            log.info("uplink role taken node_id=%s hub=%s", self.gossip.node_id, self.config.hub)
        self.gossip.claiming = True
        self.gossip.term += 1
        self.state.uplink_node = self.gossip.node_id
        self.poke_lan()
        if await self._round_due():
            await self.round()
        return min(self.refresh, self.hub_period)

    async def reachable(self) -> bool:
        """A TCP connect to the hub (no TLS, no payload): cheap on a metered link."""
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), PROBE_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            self.state.reachable = False
            self._set("unreachable", str(exc) or type(exc).__name__)
            return False
        writer.close()
        self.state.reachable = True
        return True

    async def _round_due(self) -> bool:
        behind = uplink_state.still_to_send(self.state, await self.engine.frontier())
        return behind > 0 or time.monotonic() - self._last_round >= self.hub_period

    def _heard_hub(self, frontier: Frontier) -> None:
        if self.state.learn(frontier):
            self.poke_lan()
        self._save()

    async def round(self) -> None:
        self._set("uplink")

        def allowed() -> bool:
            return self.budget_spent_with(self.meter.total - self._charged) is None

        try:
            done = await hub_round(
                self.engine, self.dial, self.meter, allowed, self._heard_hub, link=self.link
            )
        except SessionError as exc:
            self.state.reachable = False
            self._set("error", str(exc)[:300])
            return
        finally:
            self._charge()
        self._last_round = time.monotonic()
        self.state.reachable = True
        self.state.last_reached_ms = int(time.time() * 1000)
        if done.stopped_by_budget:
            await self.link.close()  # nothing more today: do not hold the connection
            self._charge()
            spent = self.budget_spent() or "the budget is spent"
            log.warning("uplink stopped reason=budget detail=%s", spent)
            self._set("budget", spent)
            return
        self._set("uplink")
        if done.report.received:
            self.poke_lan()  # the hub's changes travel on over the LAN
        await self._pass_news(done.report.news)
        await self._photos_round()

    async def _photos_round(self) -> None:
        """House photos with the hub, after the records, inside the byte budget."""
        if self.photos is None:
            return
        meter = Meter()
        parts = (THUMB, FULL) if self.config.full_photos else (THUMB,)
        try:
            report = await exchange_photos(
                self.dial.base_url,
                self.dial.context,
                self.dial.trust,
                self.photos,
                parts=parts,
                may_continue=lambda: self.budget_spent_with(meter.total) is None,
                socket_factory=meter.socket,
                options=self.dial.options(),
            )
        except PhotoSyncError as exc:
            log.warning("uplink photos failed reason=%s", exc)
            return
        finally:
            self.state.charge(meter.total, datetime.now())
            self._save()
        if report.stopped_by_budget:
            spent = self.budget_spent() or "the budget is spent"
            log.warning("uplink photos stopped reason=budget detail=%s", spent)
            self._set("budget", spent)

    def budget_spent_with(self, in_flight: int) -> str | None:
        self.state.charge(in_flight, datetime.now())
        try:
            return self.budget_spent()
        finally:
            self.state.charge(-in_flight, datetime.now())

    async def _pass_news(self, hub_version: str) -> None:
        """Hand the hub a newer revocation list than it has (it refuses revoked nodes)."""
        if not hub_version or not is_newer(self.news.version(), hub_version):
            return
        try:
            await post_news(self.link, self.news.offer())
        except SessionError as exc:
            log.warning("uplink news failed reason=%s", exc)
        finally:
            self._charge()
