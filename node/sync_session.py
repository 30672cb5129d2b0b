"""Sync sessions between two nodes over HTTPS with mutual TLS 1.3 (the LAN carrier).

One session is started by a client and moves data both ways in at most two requests:

1. `POST /sync/v1/pull`, body = a bundle of the client's hello and frontier. The answer
   streams a bundle: the server's hello and frontier, then every chunk the client lacks.
   The client commits each chunk as it arrives, so a broken connection resumes there.
2. If the server lacks anything (the client compares frontiers), `POST /sync/v1/push`
   streams those chunks; the server commits each one as it arrives and answers with a
   bundle holding its new frontier. A no-op session is request 1 alone.

Both sides check the peer's certificate right after the handshake (`check_peer`: root,
expiry, revocation) and that the hello's node id and network id match it, before any
frame after the hello is taken. A server runs at most one session per peer at a time (409
otherwise). A stream is decoded in bounded steps that give the event loop a turn, so a
flood of cheap frames cannot stall the node's other work.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from simpul.crypto.node_certificate import CertificateRejected, NodeCertificate
from simpul.crypto.revocation import RevocationList
from simpul.crypto.tls import check_peer
from simpul.node.sync_counters import FAILED, OK, SyncCounters
from simpul.sync.bundle import (
    HEADER,
    BundleDecoder,
    BundleError,
    End,
    Entries,
    Frame,
    Hello,
    encode_frame,
)
from simpul.sync.database import DiskFull
from simpul.sync.engine import IngestReport, Receiver, SyncEngine
from simpul.sync.feed import Checkpoint
from simpul.sync.frontier import Frontier, FrontierError, missing
from simpul.sync.receiver import MAX_BUFFERED_ENTRIES
from simpul.sync.refusals import RefusalHeaderError, RefusalSummary, refusal_summary

log = logging.getLogger(__name__)

PULL = "/sync/v1/pull"
PUSH = "/sync/v1/push"
NEWS = "/sync/v1/network"
NEWS_HEADER = "X-Simpul-Network"  # the server's network-news version, on every pull answer
GOSSIP_HEADER = "X-Simpul-Uplink"  # who uplinks to the hub and what it holds (node/uplink.py)
STAGED_HEADER = "X-Simpul-Staged"  # the hub: entries it keeps of chunks cut short (a frontier)
REFUSED_HEADER = "X-Simpul-Refused"  # what the sender refuses (sync/refusals.py), both ways
READ_CHUNK = 64 * 1024
MAX_REQUEST_HEAD = 64 * 1024
SESSION_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=120)
CONTENT_TYPE = "application/x-simpul-bundle"
CARRIER = "lan"  # the name this carrier counts under at /metrics
FEED_STEP = 1000  # entries decoded and handed on between turns given to other work
RECENT_SESSIONS = 100


class SessionError(Exception):
    """A session that could not run: unreachable, refused, wrong peer, bad stream."""


class PeerBusy(SessionError):
    """The peer is already in a session with this node (most often one it started)."""


class CannotStore(SessionError):
    """This node could not store what its peer sent (its disk is full); the peer is fine."""


class PeerRefused(SessionError):
    """The peer's certificate or hello is not acceptable; `reason` is a short key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class Trust:
    """What a session needs to judge its peer: the root and the newest revocation list."""

    root_cert: bytes
    revocations: RevocationList


@dataclass
class SessionReport:
    """What one session moved, as seen by the side that reports it."""

    peer: str = ""
    peer_name: str = ""  # the display name in the peer's certificate
    remote: str | None = None  # the peer's address, on the serving side
    received: int = 0
    sent: int = 0
    skipped: int = 0  # entries offered that this side already held (a replay, or a race)
    bytes_in: int = 0
    bytes_out: int = 0
    refused: list[str] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)  # refused entries per reason
    forked: set[str] = field(default_factory=set)  # origins whose feed forked (clones?)
    news: str = ""  # the peer's network-news version (revocations, data keys)
    staged: Frontier | None = None  # the hub's entries of unfinished chunks (STAGED_HEADER)
    peer_refuses: RefusalSummary | None = None  # what the peer says it refuses (REFUSED_HEADER)


class NetworkNews(Protocol):
    """Network news a node offers and takes (see node/network_gossip.py)."""

    def version(self) -> str: ...

    def offer(self) -> bytes: ...


class Gossip(Protocol):
    """Uplink gossip carried in a header of every LAN session, both ways (node/uplink.py)."""

    def announce(self) -> str: ...

    def hear(self, value: str) -> None: ...


def frontier_header(frontier: Frontier) -> str:
    """A frontier as an HTTP header value (base64 of its encoding)."""
    return base64.b64encode(frontier.encode()).decode()


def parse_frontier_header(value: str) -> Frontier:
    """The frontier in a header value; ValueError or FrontierError if malformed."""
    return Frontier.decode(base64.b64decode(value, validate=True))


def hear_refusals(headers: Mapping[str, str], report: SessionReport) -> None:
    """Note what the peer says it refuses (a malformed header is logged and ignored)."""
    value = headers.get(REFUSED_HEADER)
    if value is None:  # it refuses nothing
        report.peer_refuses = RefusalSummary()
        return
    try:
        report.peer_refuses = RefusalSummary.from_header(value)
    except RefusalHeaderError as exc:
        log.warning("sync peer=%s bad %s header: %s", report.peer, REFUSED_HEADER, exc)


async def refusals_header(engine: SyncEngine) -> dict[str, str]:
    """What this node refuses, as the header that tells the peer (none: nothing; kuota
    is precious on the uplink)."""
    summary = await refusal_summary(engine.db)
    return {REFUSED_HEADER: summary.to_header()} if summary else {}


async def skipped(engine: SyncEngine, report: SessionReport, theirs: Frontier) -> set[bytes]:
    """Origins not to send: the peer refused for good the very chunk we would send next."""
    if not report.peer_refuses:
        return set()
    return await engine.skipped(report.peer_refuses.refused_at(theirs))


def opening(engine: SyncEngine, frontier: Frontier) -> bytes:
    return HEADER + encode_frame(engine.hello()) + encode_frame(frontier)


def peer_certificate(ssl_object: object, trust: Trust) -> NodeCertificate:
    """The peer's certificate checked against `trust` now; PeerRefused with the reason."""
    if ssl_object is None:
        raise PeerRefused("no-tls", "not a TLS connection")
    try:
        return check_peer(ssl_object, trust.root_cert, trust.revocations)  # type: ignore[arg-type]
    except CertificateRejected as exc:
        raise PeerRefused(str(exc.reason), f"peer certificate refused: {exc}") from exc


def claimed_node_id(ssl_object: object) -> str:
    """The node id a refused peer's certificate claims ("" if it has none), for counting."""
    try:
        der = ssl_object.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        return NodeCertificate.parse(der).node_id if der else ""
    except (AttributeError, CertificateRejected):
        return ""


def check_hello(hello: Hello | None, certificate: NodeCertificate, engine: SyncEngine) -> None:
    if hello is None:
        raise PeerRefused("hello", "the peer's stream has no hello")
    if hello.node_id.hex() != certificate.node_id:
        raise PeerRefused(
            "hello",
            f"hello names node {hello.node_id.hex()} but the certificate is {certificate.node_id}",
        )
    if hello.network_id != engine.network_id:
        raise PeerRefused("network", f"peer is in network {hello.network_id.hex()}, not ours")


async def receive_stream(
    receiver: Receiver,
    chunks: AsyncIterator[bytes],
    report: SessionReport,
    greet: Callable[[Hello | None], None],
) -> IngestReport:
    """Decode a streamed bundle into `receiver`; chunks are committed as they complete
    (while the next ones arrive), and what was verified is kept if the stream breaks.

    `greet` judges the stream's first frame, which must be the peer's hello (None if it is
    not), before anything reaches the receiver: it raises to refuse the stream, and then
    nothing of it is stored. The receiver is fed in steps of about FEED_STEP entries with a
    turn for other work between them: a few bytes of zstd can carry a thousand entries. A
    stream with more entries waiting for their checkpoints than a receiver may hold is
    ended (no writer sends that), so a flood costs its sender a new session each time."""
    decoder = BundleDecoder()
    greeted = False
    uncovered: dict[bytes, int] = {}  # origin -> entries since its last checkpoint
    try:
        try:
            async for data in chunks:
                report.bytes_in += len(data)
                frames: list[Frame] = []
                work = 0
                try:
                    for frame in decoder.frames(data):
                        if not greeted:
                            greet(frame if isinstance(frame, Hello) else None)
                            greeted = True
                        frames.append(frame)
                        work += _weigh(frame, uncovered)
                        if work >= FEED_STEP:
                            await receiver.feed(frames)
                            frames, work = [], 0
                            await asyncio.sleep(0)
                except BundleError as exc:
                    await receiver.feed(frames)
                    raise SessionError(f"bad stream from peer: {exc}") from exc
                if frames:
                    await receiver.feed(frames)
            try:
                decoder.close()
            except BundleError as exc:
                raise SessionError(f"stream from peer ended early: {exc}") from exc
        except Exception:
            await receiver.drain()
            raise
        return await receiver.finish()
    except DiskFull as exc:
        raise CannotStore(str(exc)) from exc


def _weigh(frame: Frame, uncovered: dict[bytes, int]) -> int:
    """The work `frame` brings (its entries, or 1), kept in `uncovered` (entries per origin
    since its last checkpoint); SessionError when more wait than a receiver may hold."""
    if isinstance(frame, Checkpoint):
        uncovered.pop(frame.origin, None)
    if not isinstance(frame, Entries):
        return 1
    uncovered[frame.origin] = uncovered.get(frame.origin, 0) + len(frame.items)
    if sum(uncovered.values()) > MAX_BUFFERED_ENTRIES:
        raise SessionError(
            f"more than {MAX_BUFFERED_ENTRIES} entries without a checkpoint: stream ended"
        )
    return len(frame.items)


FORKED = ("chain", "own-feed")
CLONE_ADVICE = (
    "the feed of node {origin} does not continue the copy held here: it was altered, or "
    "two devices share that node's identity (a copied SD card, or a node restored from a "
    "backup while the original still runs). Stop the copy, move its data dir aside and "
    "enrol it again as a new node ('simpul enroll request'); revoke the old id if unsure."
)


def note_ingest(report: SessionReport, ingest: IngestReport) -> None:
    report.received += ingest.accepted
    report.skipped += ingest.skipped
    report.refused += [f"{r.reason}: {r.detail}" for r in ingest.refused]
    report.refusals.update(ingest.reasons())
    for refused in ingest.refused:
        if refused.reason in FORKED:
            report.forked.add(refused.origin.hex())
            log.error(
                "sync clone suspected origin=%s advice=%r",
                refused.origin.hex(),
                CLONE_ADVICE.format(origin=refused.origin.hex()),
            )


async def _frames_out(
    engine: SyncEngine, theirs: Frontier, report: SessionReport
) -> AsyncIterator[bytes]:
    async for frame in engine.outgoing_frames(theirs, await skipped(engine, report, theirs)):
        data = encode_frame(frame)
        report.bytes_out += len(data)
        if isinstance(frame, Entries):
            report.sent += len(frame.items)
        yield data


# ----- server ----------------------------------------------------------------------------


class SyncServer:
    """The listening side: aiohttp handlers for pull and push, one session per peer."""

    def __init__(
        self,
        engine: SyncEngine,
        trust: Trust,
        busy: set[str] | None = None,
        on_served: Callable[[SessionReport], Awaitable[None]] | None = None,
        news: NetworkNews | None = None,
        counters: SyncCounters | None = None,
        gossip: Gossip | None = None,
        on_refused: Callable[[str, str, int], None] | None = None,
        on_report: Callable[[SessionReport], None] | None = None,
        staged: Callable[[], Frontier] | None = None,
        refresh: Callable[[], None] | None = None,
    ) -> None:
        self.counters = counters or SyncCounters()
        self.engine = engine
        self.trust = trust
        self._busy: set[str] = busy if busy is not None else set()
        self._on_served = on_served
        self._news = news
        self._gossip = gossip
        # (node id or "", reason key, entries or 1): every refusal, for counting
        self._on_refused = on_refused or (lambda node_id, reason, count: None)
        self._on_report = on_report or (lambda report: None)
        self._staged = staged
        # called before every peer check: brings `trust` up to a revocation made meanwhile
        self._refresh = refresh or (lambda: None)
        self._live: dict[str, asyncio.BaseTransport] = {}  # node id -> its session's link
        # the newest push reports (bounded: a hub serves pushes for months)
        self.sessions: deque[SessionReport] = deque(maxlen=RECENT_SESSIONS)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_HEAD)
        app.router.add_post(PULL, self.pull)
        app.router.add_post(PUSH, self.push)
        app.router.add_get(NEWS, self.network_news)
        return app

    async def network_news(self, request: web.Request) -> web.Response:
        self.authenticate(request)
        if self._news is None:
            raise web.HTTPNotFound(text="no network news here")
        return web.Response(body=self._news.offer(), content_type="application/json")

    def authenticate(self, request: web.Request) -> NodeCertificate:
        assert request.transport is not None
        self._refresh()
        ssl_object = request.transport.get_extra_info("ssl_object")
        try:
            peer = peer_certificate(ssl_object, self.trust)
        except PeerRefused as exc:
            node_id = claimed_node_id(ssl_object)
            log.warning(
                "sync session refused remote=%s node_id=%s reason=%s detail=%s",
                request.remote,
                node_id,
                exc.reason,
                exc,
            )
            self._on_refused(node_id, exc.reason, 1)
            raise web.HTTPForbidden(text=str(exc)) from None
        if self._gossip is not None and GOSSIP_HEADER in request.headers:
            self._gossip.hear(request.headers[GOSSIP_HEADER])
        return peer

    async def _opening_frames(self, request: web.Request, peer: NodeCertificate) -> list[Frame]:
        body = await request.content.read(MAX_REQUEST_HEAD)
        try:
            frames = BundleDecoder().feed(body)
        except BundleError as exc:
            raise web.HTTPBadRequest(text=f"bad opening: {exc}") from None
        hello = next((f for f in frames if isinstance(f, Hello)), None)
        try:
            check_hello(hello, peer, self.engine)
        except PeerRefused as exc:
            log.warning("sync session refused node_id=%s reason=%s", peer.node_id, exc)
            self._on_refused(peer.node_id, exc.reason, 1)
            raise web.HTTPForbidden(text=str(exc)) from None
        return frames

    def _claim(self, peer: NodeCertificate, request: web.Request) -> None:
        if peer.node_id in self._busy:
            raise web.HTTPConflict(text="a session with this node is already running")
        self._busy.add(peer.node_id)
        assert request.transport is not None
        self._live[peer.node_id] = request.transport

    def _release(self, peer: NodeCertificate) -> None:
        self._busy.discard(peer.node_id)
        self._live.pop(peer.node_id, None)

    def cut(self, revocations: RevocationList) -> int:
        """Close the link of every running session with a node `revocations` names (it
        fails on its next read or write, keeping the whole chunks committed before); how
        many were cut."""
        cut = [node for node in self._live if revocations.is_revoked(node)]
        for node_id in cut:
            log.warning("sync session cut node_id=%s reason=revoked", node_id)
            self._live.pop(node_id).close()
        return len(cut)

    async def pull(self, request: web.Request) -> web.StreamResponse:
        peer = self.authenticate(request)
        frames = await self._opening_frames(request, peer)
        theirs = next((f for f in frames if isinstance(f, Frontier)), Frontier())
        self._claim(peer, request)
        report = SessionReport(peer=peer.node_id, peer_name=peer.name, remote=request.remote)
        hear_refusals(request.headers, report)
        outcome = FAILED
        try:
            headers = {"Content-Type": CONTENT_TYPE, **await refusals_header(self.engine)}
            if self._news is not None:
                headers[NEWS_HEADER] = self._news.version()
            if self._gossip is not None:
                headers[GOSSIP_HEADER] = self._gossip.announce()
            if self._staged is not None:
                headers[STAGED_HEADER] = frontier_header(self._staged())
            response = web.StreamResponse(headers=headers)
            await response.prepare(request)
            await response.write(opening(self.engine, await self.engine.frontier()))
            async for data in _frames_out(self.engine, theirs, report):
                await response.write(data)
            await response.write(encode_frame(End()))
            await response.write_eof()
            outcome = OK
        except ConnectionError as exc:  # the peer went away (or stopped): it resumes later
            log.warning(
                "sync serve pull cut node_id=%s sent=%d reason=%s", peer.node_id, report.sent, exc
            )
            return response
        finally:
            self._release(peer)
            self.counters.session(CARRIER, "server", outcome, bytes_out=report.bytes_out)
            log.info(
                "sync serve pull node_id=%s sent=%d bytes_out=%d",
                peer.node_id,
                report.sent,
                report.bytes_out,
            )
        await self._served(report)
        return response

    async def _served(self, report: SessionReport) -> None:
        self._on_report(report)
        if self._on_served is not None:
            await self._on_served(report)

    @property
    def in_session(self) -> frozenset[str]:
        """The node ids this server is in a session with right now."""
        return frozenset(self._busy)

    async def push(self, request: web.Request) -> web.Response:
        peer = self.authenticate(request)
        self._claim(peer, request)
        report = SessionReport(peer=peer.node_id, peer_name=peer.name, remote=request.remote)
        hear_refusals(request.headers, report)
        try:
            ingest = await receive_stream(
                self.engine.receiver(),
                request.content.iter_chunked(READ_CHUNK),
                report,
                lambda hello: check_hello(hello, peer, self.engine),
            )
            note_ingest(report, ingest)
        except PeerRefused as exc:  # a hello naming another node: nothing was stored
            log.warning("sync serve push refused node_id=%s reason=%s", peer.node_id, exc)
            self.counters.session(CARRIER, "server", FAILED, report.bytes_in, 0, report.refused)
            self._on_refused(peer.node_id, exc.reason, 1)
            raise web.HTTPForbidden(text=str(exc)) from None
        except CannotStore as exc:
            log.error("sync serve push failed node_id=%s reason=%s", peer.node_id, exc)
            self.counters.session(CARRIER, "server", FAILED, report.bytes_in, 0, report.refused)
            raise web.HTTPInsufficientStorage(text=str(exc)) from None
        except SessionError as exc:
            log.warning("sync serve push failed node_id=%s reason=%s", peer.node_id, exc)
            self.counters.session(CARRIER, "server", FAILED, report.bytes_in, 0, report.refused)
            self._on_refused(peer.node_id, getattr(exc, "reason", "stream"), 1)
            raise web.HTTPBadRequest(text=str(exc)) from None
        except ConnectionError as exc:  # the link went away: every whole chunk is kept
            log.warning(
                "sync serve push cut node_id=%s received=%d reason=%s",
                peer.node_id,
                report.received,
                exc,
            )
            raise web.HTTPBadRequest(text="connection lost") from None
        finally:
            self._release(peer)
        self.counters.session(CARRIER, "server", OK, report.bytes_in, 0, report.refused)
        for reason, count in report.refusals.items():
            self._on_refused(peer.node_id, reason, count)
        if report.skipped:
            log.info(
                "sync serve push replayed node_id=%s entries=%d (already held, no effect)",
                peer.node_id,
                report.skipped,
            )
            self._on_refused(peer.node_id, "replayed", report.skipped)
        log.info(
            "sync serve push node_id=%s received=%d refused=%d bytes_in=%d",
            peer.node_id,
            report.received,
            len(report.refused),
            report.bytes_in,
        )
        self.sessions.append(report)
        await self._served(report)
        return web.Response(
            body=opening(self.engine, await self.engine.frontier()),
            content_type=CONTENT_TYPE,
            headers=await refusals_header(self.engine),
        )


# ----- client ----------------------------------------------------------------------------


@dataclass
class Dial:
    """How a client reaches a peer: URL, TLS context, and what else it sends or expects."""

    base_url: str
    context: ssl.SSLContext
    trust: Trust
    expected_node_id: str | None = None
    server_hostname: str | None = None  # the TLS server name (the hub picks a network by it)
    gossip: Gossip | None = None

    def headers(self) -> dict[str, str]:
        return {GOSSIP_HEADER: self.gossip.announce()} if self.gossip is not None else {}

    def options(self) -> dict[str, object]:
        return {"server_hostname": self.server_hostname} if self.server_hostname else {}


async def sync_with(
    engine: SyncEngine,
    base_url: str,
    context: ssl.SSLContext,
    trust: Trust,
    expected_node_id: str | None = None,
    gossip: Gossip | None = None,
) -> SessionReport:
    """Run one session with the node at `base_url` (https://host:port).

    Pull and push share one kept-alive connection: the client closes it when done. (A
    server that closed first, after writing a large stream the client was still reading,
    would lose the unread tail when its TLS shutdown timed out.)"""
    dial = Dial(base_url, context, trust, expected_node_id, gossip=gossip)
    report = SessionReport()
    connector = PeerConnector(ssl=context, limit=1)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=SESSION_TIMEOUT) as http:
            theirs = await pull_from(http, engine, dial, report)
            lacking = set(missing(await engine.frontier(), theirs))
            lacking -= await skipped(engine, report, theirs)
            if lacking:
                await push_to(http, engine, dial, _frames_out(engine, theirs, report), report)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise SessionError(f"cannot sync with {base_url}: {exc}") from exc
    log.info(
        "sync session peer=%s received=%d sent=%d bytes_in=%d bytes_out=%d",
        report.peer,
        report.received,
        report.sent,
        report.bytes_in,
        report.bytes_out,
    )
    return report


async def pull_from(
    http: aiohttp.ClientSession, engine: SyncEngine, dial: Dial, report: SessionReport
) -> Frontier:
    """Request 1 of a session: take what the peer has for us; the peer's frontier."""
    first = opening(engine, await engine.frontier())
    report.bytes_out += len(first)
    headers = {**dial.headers(), **await refusals_header(engine)}
    async with http.post(
        dial.base_url + PULL, data=first, headers=headers, **dial.options()
    ) as response:
        if response.status == web.HTTPConflict.status_code:
            raise PeerBusy(f"{dial.base_url} is already in a session with this node")
        if response.status != 200:
            raise SessionError(f"peer answered {response.status}: {await response.text()}")
        peer = _session_peer(http.connector, dial.trust, dial.expected_node_id)
        report.peer, report.peer_name = peer.node_id, peer.name
        report.news = response.headers.get(NEWS_HEADER, "")
        hear_refusals(response.headers, report)
        if dial.gossip is not None and GOSSIP_HEADER in response.headers:
            dial.gossip.hear(response.headers[GOSSIP_HEADER])
        if STAGED_HEADER in response.headers:
            try:
                report.staged = parse_frontier_header(response.headers[STAGED_HEADER])
            except (ValueError, FrontierError) as exc:
                raise SessionError(f"bad {STAGED_HEADER} header from peer: {exc}") from exc
        receiver = engine.receiver()
        stream = response.content.iter_chunked(READ_CHUNK)
        ingest = await receive_stream(
            receiver, stream, report, lambda hello: check_hello(hello, peer, engine)
        )
        note_ingest(report, ingest)
        return receiver.their_frontier or Frontier()


async def fetch_news(base_url: str, context: ssl.SSLContext) -> bytes:
    """The network news a peer offers (its revocation list and wrapped data keys).

    The handshake already proved a certificate of our root; the news itself is signed by
    the root and checked when taken, so it needs no per-peer check here."""
    connector = aiohttp.TCPConnector(ssl=context, force_close=True)
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=SESSION_TIMEOUT) as http,
            http.get(base_url + NEWS) as response,
        ):
            if response.status != 200:
                raise SessionError(f"peer answered {response.status} for network news")
            return await response.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise SessionError(f"cannot fetch network news from {base_url}: {exc}") from exc


class PeerConnector(aiohttp.TCPConnector):
    """A connector that keeps the TLS object of its newest connection, for the peer check,
    and closes its connections with a TLS close_notify: the peer keeps the TLS session of a
    cleanly closed connection, so the next one resumes it (crypto/tls.py); aiohttp itself
    would drop the connection, and the server's session with it.

    (A response whose body arrived with its headers has already given its connection
    back by the time the caller looks, so the peer cannot be read from the response.)"""

    ssl_object: object = None

    async def _create_connection(self, *args: Any, **kwargs: Any) -> Any:
        protocol = await super()._create_connection(*args, **kwargs)
        transport = getattr(protocol, "transport", None)
        self.ssl_object = transport.get_extra_info("ssl_object") if transport else None
        if transport is not None:
            self.__dict__.setdefault("_tls_transports", []).append(transport)
        return protocol

    async def close(self, *, abort_ssl: bool = False) -> None:
        for transport in self.__dict__.pop("_tls_transports", []):
            if not transport.is_closing():
                transport.close()  # sends close_notify at once; aiohttp then closes the socket
        await super().close(abort_ssl=abort_ssl)


def _session_peer(
    connector: aiohttp.BaseConnector | None, trust: Trust, expected_node_id: str | None
) -> NodeCertificate:
    peer = peer_certificate(getattr(connector, "ssl_object", None), trust)
    if expected_node_id is not None and peer.node_id != expected_node_id:
        raise SessionError(f"expected node {expected_node_id} at this address, met {peer.node_id}")
    return peer


async def push_to(
    http: aiohttp.ClientSession,
    engine: SyncEngine,
    dial: Dial,
    frames: AsyncIterator[bytes],
    report: SessionReport,
) -> Frontier:
    """Request 2: stream `frames` (encoded chunks) to the peer; its frontier afterwards."""

    async def body() -> AsyncIterator[bytes]:
        head = HEADER + encode_frame(engine.hello())
        report.bytes_out += len(head)
        yield head
        async for data in frames:
            yield data
        yield encode_frame(End())

    headers = {"Content-Type": CONTENT_TYPE, **dial.headers(), **await refusals_header(engine)}
    async with http.post(
        dial.base_url + PUSH, data=body(), headers=headers, **dial.options()
    ) as response:
        answer = await response.read()
        hear_refusals(response.headers, report)
        report.bytes_in += len(answer)
        if response.status != 200:
            raise SessionError(f"peer refused the push: {response.status} {answer[:200]!r}")
    try:
        decoded = BundleDecoder().feed(answer)
    except BundleError as exc:
        raise SessionError(f"bad push answer from peer: {exc}") from exc
    return next((f for f in decoded if isinstance(f, Frontier)), Frontier())
