"""One round between a node and the hub: the LAN session's pull, then pushes in small pieces.

The round speaks the LAN protocol (`node/sync_session.py`): request 1 pulls what the hub
holds for the network and learns the hub's frontier; then, instead of one push with
everything, it pushes pieces of about `piece_bytes` (whole chunks, each ending at a signed
checkpoint), and the hub answers every piece with its new frontier. An interrupted round
loses at most the piece in flight: the hub committed every chunk whose checkpoint it read,
and the next round starts from the hub's frontier.

Pieces favour small, recent changes: origins with the fewest missing entries go first,
ties broken by the newest checkpoint, so one operator's edit is not stuck behind another
office's bulk import. Only signed chunks travel (entries past an origin's last checkpoint
never do). An origin the hub already holds is sent without its certificate (the hub
verifies with the one it stored).

Bytes are counted at the socket (TLS records, both directions) by a `Meter`, so the
uplink's budget (`node/uplink_budget.py`) is charged what the mobile operator charges.

A `HubLink` carries rounds: one aiohttp session whose single connection is kept between
rounds for up to `KEEP_SECONDS` idle (longer than the default hub period, far shorter
than the hub's keep-alive), so a round on it pays no handshake at all. A new connection
resumes the TLS 1.3 session of the last one (`crypto/tls.py`), which leaves the
certificates out. Either way the hub's certificate is checked on every request.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from simpul.node.sync_session import (
    NEWS,
    SESSION_TIMEOUT,
    Dial,
    PeerConnector,
    SessionError,
    SessionReport,
    pull_from,
    push_to,
    skipped,
)
from simpul.sync.bundle import Certificate, Checkpoint, Entries, Frame, encode_frame
from simpul.sync.engine import SyncEngine
from simpul.sync.frontier import Frontier, missing

log = logging.getLogger(__name__)

KEEP_SECONDS = 360.0  # idle time a kept connection to the hub lives (hub period: 300 s)
PIECE_BYTES = 512 * 1024  # whole chunks per acknowledged push; the hub stages inside them
FRAME_ENTRIES = 100  # the hub stages whole frames: a cut loses at most one of them


class Meter:
    """Bytes through the sockets it made, both directions (TLS overhead included)."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0

    @property
    def total(self) -> int:
        return self.sent + self.received

    def socket(self, addr_info: Any) -> socket.socket:
        """An aiohttp `socket_factory`."""
        family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
        return _CountingSocket(self, family, kind, proto)


class _CountingSocket(socket.socket):
    """A socket that adds what it sends and receives to its meter (asyncio calls these)."""

    def __init__(self, meter: Meter, *args: Any) -> None:
        super().__init__(*args)
        self.meter = meter

    def send(self, data: Any, flags: int = 0) -> int:
        sent = super().send(data, flags)
        self.meter.sent += sent
        return sent

    def recv(self, size: int, flags: int = 0) -> bytes:
        data = super().recv(size, flags)
        self.meter.received += len(data)
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        got = super().recv_into(buffer, nbytes, flags)
        self.meter.received += got
        return got


class HubLink:
    """The uplink's way to the hub: rounds share one kept connection while it lives."""

    def __init__(self, dial: Dial, meter: Meter, keep_seconds: float = KEEP_SECONDS) -> None:
        self.dial = dial
        self.meter = meter
        self.keep_seconds = keep_seconds
        self._http: aiohttp.ClientSession | None = None
        self._connector: PeerConnector | None = None
        self.warm = False  # a round ended well on this session: its connection may be kept

    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session (made on first use, or after `close`)."""
        if self._http is None or self._http.closed:
            self._connector = PeerConnector(
                ssl=self.dial.context,
                limit=1,
                socket_factory=self.meter.socket,
                keepalive_timeout=self.keep_seconds,
            )
            self._http = aiohttp.ClientSession(connector=self._connector, timeout=SESSION_TIMEOUT)
        return self._http

    @property
    def last_tls(self) -> ssl.SSLObject | None:
        """The TLS object of the newest connection (also after `close`)."""
        return getattr(self._connector, "ssl_object", None)

    async def close(self) -> None:
        """Close the connection (a TLS close_notify, which the meter counts)."""
        self.warm = False
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> HubLink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass
class HubRound:
    """What one round with the hub did."""

    report: SessionReport = field(default_factory=SessionReport)
    hub_frontier: Frontier | None = None
    pieces: int = 0
    stopped_by_budget: bool = False
    connection: str = ""  # kept (no handshake), resumed (TLS session) or new


async def _order(engine: SyncEngine, todo: dict[bytes, tuple[int, int]]) -> list[bytes]:
    """Origins with the fewest missing entries first, then the most recently signed."""
    latest = dict(
        await engine.db.fetchall("SELECT origin, max(at_ms) FROM checkpoints GROUP BY origin")
    )
    return sorted(todo, key=lambda o: (todo[o][1] - todo[o][0], -(latest.get(o) or 0), o))


async def next_piece(
    engine: SyncEngine,
    theirs: Frontier,
    piece_bytes: int,
    report: SessionReport,
    staged: Frontier | None = None,
) -> list[bytes]:
    """Encoded frames of whole chunks the hub lacks, about `piece_bytes` of them; an origin
    the hub `staged` part of continues after the staged entries."""
    mine = await engine.frontier()
    staged = staged or Frontier()
    basis = Frontier({o: max(theirs.get(o, 0), staged.get(o, 0)) for o in {*theirs, *staged}})
    todo = missing(mine, basis)
    for origin in await skipped(engine, report, theirs):  # the hub refused it for good
        todo.pop(origin, None)
    piece: list[bytes] = []
    size = 0
    for origin in await _order(engine, todo):
        only = Frontier({**mine, origin: basis.get(origin, 0)})
        frames = engine.outgoing_frames(only)
        try:
            async for frame in frames:
                if isinstance(frame, Certificate) and theirs.get(origin, 0):
                    continue
                for part in _split(frame):
                    data = encode_frame(part)
                    piece.append(data)
                    size += len(data)
                if isinstance(frame, Entries):
                    report.sent += len(frame.items)
                if isinstance(frame, Checkpoint) and size >= piece_bytes:
                    return piece
        finally:
            await frames.aclose()
    return piece


def _split(frame: Frame) -> list[Frame]:
    """An entries frame cut into frames of at most FRAME_ENTRIES entries."""
    if not isinstance(frame, Entries) or len(frame.items) <= FRAME_ENTRIES:
        return [frame]
    return [
        Entries(frame.origin, frame.first_seq + at, frame.items[at : at + FRAME_ENTRIES])
        for at in range(0, len(frame.items), FRAME_ENTRIES)
    ]


async def _frames_while(
    piece: list[bytes], done: HubRound, may_continue: Callable[[], bool]
) -> AsyncIterator[bytes]:
    """The piece's frames while `may_continue()`; stopping inside a chunk is fine (the hub
    stages its frames, and the next round continues after them)."""
    for data in piece:
        if not may_continue():
            done.stopped_by_budget = True
            return
        done.report.bytes_out += len(data)
        yield data


def _connection(before: ssl.SSLObject | None, after: ssl.SSLObject | None) -> str:
    if after is not None and after is before:
        return "kept"
    return "resumed" if after is not None and after.session_reused else "new"


async def _pull(engine: SyncEngine, link: HubLink, done: HubRound) -> Frontier:
    """Request 1 of a round; once more on a new connection if a kept one turns out dead
    (the hub restarted, or a NAT forgot it): a pull is safe to repeat."""
    try:
        return await pull_from(link.session(), engine, link.dial, done.report)
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        if not link.warm:
            raise
        log.info("uplink kept connection lost reason=%s, connecting again", exc)
        await link.close()
        done.report = SessionReport()
        return await pull_from(link.session(), engine, link.dial, done.report)


async def hub_round(
    engine: SyncEngine,
    dial: Dial,
    meter: Meter,
    may_continue: Callable[[], bool] = lambda: True,
    on_frontier: Callable[[Frontier], None] = lambda frontier: None,
    piece_bytes: int = PIECE_BYTES,
    link: HubLink | None = None,
) -> HubRound:
    """Pull from the hub, then push what it lacks piece by piece while `may_continue()`;
    `on_frontier` hears every frontier the hub answers with. On `link` (whose meter is
    `meter`) the connection stays open for the next round; without one it is closed."""
    if link is None:
        async with HubLink(dial, meter) as own:
            return await hub_round(engine, dial, meter, may_continue, on_frontier, piece_bytes, own)
    assert link.meter is meter and link.dial is dial, "a round counts on its link's meter"
    done = HubRound()
    start_sent, start_received = meter.sent, meter.received
    kept_tls = link.last_tls if link.warm else None
    try:
        theirs = await _pull(engine, link, done)
        staged = done.report.staged or Frontier()
        done.hub_frontier = theirs
        on_frontier(theirs)
        while True:
            if not may_continue():
                done.stopped_by_budget = True
                break
            piece = await next_piece(engine, theirs, piece_bytes, done.report, staged)
            if not piece:
                break
            before = theirs
            frames = _frames_while(piece, done, may_continue)
            theirs = await push_to(link.session(), engine, dial, frames, done.report)
            done.hub_frontier = theirs
            done.pieces += 1
            on_frontier(theirs)
            if done.stopped_by_budget:
                break
            if theirs == before:
                raise SessionError("the hub took nothing of the last piece (see its log)")
    except (TimeoutError, aiohttp.ClientError, OSError, SessionError) as exc:
        await link.close()  # whatever is left of the connection is not worth keeping
        if isinstance(exc, SessionError):
            raise
        raise SessionError(f"cannot sync with the hub at {dial.base_url}: {exc}") from exc
    link.warm = True
    done.connection = _connection(kept_tls, link.last_tls)
    log.info(
        "uplink round connection=%s hub=%s received=%d sent=%d pieces=%d "
        "socket_bytes_out=%d socket_bytes_in=%d",
        done.connection,
        done.report.peer or "?",
        done.report.received,
        done.report.sent,
        done.pieces,
        meter.sent - start_sent,
        meter.received - start_received,
    )
    return done


async def post_news(link: HubLink, offer: bytes) -> None:
    """Hand the hub this node's network news (a newer revocation list), on the kept link."""
    try:
        async with link.session().post(
            link.dial.base_url + NEWS,
            data=offer,
            **link.dial.options(),  # type: ignore[arg-type]
        ) as answer:
            if answer.status != 200:
                raise SessionError(f"the hub answered {answer.status} to network news")
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        await link.close()
        raise SessionError(f"cannot hand network news to the hub: {exc}") from exc
