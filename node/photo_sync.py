"""Photo files between two nodes on the LAN, after their records, over the same mutual TLS.

Records carry the references (hash, size, thumbnail hash); this carrier moves the bytes.
After a record session with a peer, a background task (one per peer, never holding up
records) runs a photo exchange:

1. `GET /sync/v1/photos-wanted`: the files the peer references but lacks, thumbnails
   first; the client `PUT`s each one it holds to `/sync/v1/photos/{hash}`.
2. The client fetches the files it lacks itself with `GET /sync/v1/photos/{hash}`,
   thumbnails of every household before any full photo. A download is appended to a
   partial file as it arrives; a cut one resumes with `Range: bytes=N-`.

Every file is checked against its hash before it is kept (both sides): one that does not
match is thrown away, counted, and fetched again in a later session. A server takes only
files its records reference. The hub serves the same endpoints per network; the uplink
moves thumbnails only unless the admin enables full photos, checking its byte budget
before every file (`may_continue`). See docs/protocol.md, "Photo transfer".
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from simpul.node.photos import Photos
from simpul.node.sync_session import SESSION_TIMEOUT, PeerConnector, Trust, peer_certificate
from simpul.sync.photo_store import PhotoMismatch, is_hash
from simpul.sync.photos import FULL, THUMB, Wanted

log = logging.getLogger(__name__)

PHOTO_PATH = "/sync/v1/photos/{hash}"
WANTED_PATH = "/sync/v1/photos-wanted"
PHOTO_VERSION = "1"
VERSION_HEADER = "X-Simpul-Photos"
MAX_FILE = 4 * 1024 * 1024  # a re-encoded photo is ~300 KB; anything this big is wrong
READ_CHUNK = 256 * 1024

Pick = Callable[[web.Request], Photos]  # the photos of the request's peer, once authenticated


class PhotoSyncError(Exception):
    """A photo exchange that could not run (unreachable, refused, wrong peer)."""


@dataclass
class PhotoReport:
    """What one photo exchange moved."""

    peer: str = ""
    fetched: int = 0
    sent: int = 0
    refused: int = 0  # files whose bytes did not match their hash
    stopped_by_budget: bool = False
    bytes_in: int = 0
    bytes_out: int = 0
    still_wanted: list[Wanted] = field(default_factory=list)


# ----- server ----------------------------------------------------------------------------


def add_photo_sync_routes(app: web.Application, pick: Pick) -> None:
    """The photo endpoints of a sync server; `pick` authenticates the peer (raising an HTTP
    error) and gives the photos it may use."""

    async def wanted(request: web.Request) -> web.Response:
        photos = pick(request)
        items = await photos.index.wanted()
        body = [{"hash": w.digest, "part": w.part, "size": w.size} for w in items]
        return web.json_response(body, headers={VERSION_HEADER: PHOTO_VERSION})

    async def serve(request: web.Request) -> web.StreamResponse:
        photos = pick(request)
        digest = request.match_info["hash"]
        if not photos.store.has(digest):
            raise web.HTTPNotFound(text="photo not held here")
        return web.FileResponse(photos.store.path(digest), headers={VERSION_HEADER: PHOTO_VERSION})

    async def take(request: web.Request) -> web.Response:
        photos = pick(request)
        digest = request.match_info["hash"]
        await photos.index.refresh()
        if digest not in photos.index.referenced():
            raise web.HTTPConflict(text="no record here references this photo")
        if request.content_length is not None and request.content_length > MAX_FILE:
            raise web.HTTPRequestEntityTooLarge(
                max_size=MAX_FILE, actual_size=request.content_length
            )
        data = bytearray()
        while chunk := await request.content.read(READ_CHUNK):
            data += chunk
            if len(data) > MAX_FILE:
                raise web.HTTPRequestEntityTooLarge(max_size=MAX_FILE, actual_size=len(data))
        try:
            await asyncio.to_thread(photos.store.put, bytes(data), digest)
        except PhotoMismatch as exc:
            log.warning("photo refused remote=%s digest=%s reason=mismatch", request.remote, digest)
            raise web.HTTPUnprocessableEntity(text=str(exc)) from None
        log.info("photo received remote=%s digest=%s bytes=%d", request.remote, digest, len(data))
        return web.Response(status=204)

    hashed = PHOTO_PATH.replace("{hash}", "{hash:[0-9a-f]{64}}")
    app.router.add_get(WANTED_PATH, wanted)
    app.router.add_get(hashed, serve)
    app.router.add_put(hashed, take)


# ----- client ----------------------------------------------------------------------------


class _Exchange:
    """One photo exchange with one peer over one kept-alive connection."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        photos: Photos,
        report: PhotoReport,
        options: dict[str, Any],
    ) -> None:
        self.http = http
        self.base_url = base_url
        self.photos = photos
        self.report = report
        self.options = options  # per request: the TLS server name the hub picks a network by

    def url(self, digest: str) -> str:
        return self.base_url + PHOTO_PATH.replace("{hash}", digest)

    async def their_wants(self) -> list[Wanted]:
        async with self.http.get(self.base_url + WANTED_PATH, **self.options) as response:
            if response.status != 200:
                raise PhotoSyncError(f"peer answered {response.status} for its wanted photos")
            items = await response.json()
        return [
            Wanted(item["hash"], item["part"], int(item.get("size") or 0))
            for item in items
            if isinstance(item, dict) and is_hash(item.get("hash"))
        ]

    async def send(self, wanted: Wanted) -> None:
        if not self.photos.store.has(wanted.digest):
            return
        data = await asyncio.to_thread(self.photos.store.read, wanted.digest)
        async with self.http.put(self.url(wanted.digest), data=data, **self.options) as response:
            if response.status != 204:
                log.info("photo not taken digest=%s status=%d", wanted.digest, response.status)
                return
        self.report.sent += 1
        self.report.bytes_out += len(data)

    async def fetch(self, wanted: Wanted) -> None:
        """Fetch one file, resuming a partial download; keep it only if its hash matches."""
        store = self.photos.store
        offset = store.partial_size(wanted.digest)
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        get = self.http.get(self.url(wanted.digest), headers=headers, **self.options)
        async with get as response:
            if response.status == 404:
                return  # the peer lacks it too
            if response.status == 200 and offset:
                store.drop_partial(wanted.digest)  # the range was not honoured: start over
            elif response.status not in (200, 206):
                raise PhotoSyncError(f"peer answered {response.status} for a photo")
            async for chunk in response.content.iter_chunked(READ_CHUNK):
                await asyncio.to_thread(store.append_partial, wanted.digest, chunk)
                self.report.bytes_in += len(chunk)
                if store.partial_size(wanted.digest) > MAX_FILE:
                    store.drop_partial(wanted.digest)
                    raise PhotoSyncError(f"photo {wanted.digest[:16]}… is larger than allowed")
        try:
            await asyncio.to_thread(store.finish_partial, wanted.digest)
        except PhotoMismatch as exc:
            self.report.refused += 1
            log.warning("photo refused digest=%s reason=mismatch detail=%s", wanted.digest, exc)
            return
        self.report.fetched += 1


async def exchange_photos(
    base_url: str,
    context: ssl.SSLContext,
    trust: Trust,
    photos: Photos,
    expected_node_id: str | None = None,
    *,
    parts: tuple[str, ...] = (THUMB, FULL),
    may_continue: Callable[[], bool] = lambda: True,
    socket_factory: Callable[[Any], socket.socket] | None = None,
    options: dict[str, Any] | None = None,
) -> PhotoReport:
    """Send a peer the photo files it lacks and fetch the ones this node lacks, every
    thumbnail (both ways) before any full photo; only `parts`, and each file only while
    `may_continue()` (a byte budget)."""
    report = PhotoReport()
    extra = {"socket_factory": socket_factory} if socket_factory else {}
    connector = PeerConnector(ssl=context, limit=1, **extra)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=SESSION_TIMEOUT) as http:
            run = _Exchange(http, base_url, photos, report, options or {})
            theirs = await run.their_wants()
            peer = peer_certificate(connector.ssl_object, trust)
            if expected_node_id is not None and peer.node_id != expected_node_id:
                raise PhotoSyncError(f"expected node {expected_node_id}, met {peer.node_id}")
            report.peer = peer.node_id
            for part in parts:
                mine = [w for w in await photos.index.wanted() if w.part == part]
                for step, wanted in [(run.fetch, w) for w in mine] + [
                    (run.send, w) for w in theirs if w.part == part
                ]:
                    if not may_continue():
                        report.stopped_by_budget = True
                        break
                    await step(wanted)
                if report.stopped_by_budget:
                    break
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        raise PhotoSyncError(f"cannot exchange photos with {base_url}: {exc}") from exc
    report.still_wanted = [w for w in await photos.index.wanted() if w.part in parts]
    log.info(
        "photo exchange peer=%s fetched=%d sent=%d refused=%d bytes_in=%d bytes_out=%d "
        "still_wanted=%d budget_stop=%s",
        report.peer, report.fetched, report.sent, report.refused, report.bytes_in,
        report.bytes_out, len(report.still_wanted), report.stopped_by_budget,
    )  # fmt: skip
    return report


class PhotoCourier:
    """Runs photo exchanges in the background, at most one per peer at a time."""

    def __init__(self, run: Callable[[str, str | None], Awaitable[PhotoReport]]) -> None:
        self._run = run
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def after_session(self, address: str, node_id: str | None) -> None:
        """Records with this peer are done: start a photo exchange unless one runs."""
        running = self._tasks.get(address)
        if running is not None and not running.done():
            return
        self._tasks[address] = asyncio.create_task(self._one(address, node_id))

    async def _one(self, address: str, node_id: str | None) -> None:
        try:
            await self._run(address, node_id)
        except PhotoSyncError as exc:
            log.info("photo exchange failed peer=%s error=%s", address, exc)
        except Exception:
            log.exception("photo exchange failed peer=%s", address)

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
