"""House photos on the operator page and in the JSON API.

Page: the household page's photo section (templates/_photos.html) posts a multipart
form (CSRF token, `jenis`, the `foto` file from the camera or a file; no JavaScript) to
`/keluarga/{id}/foto`; `/keluarga/{id}/foto/{hash}/hapus` removes one; the thumbnail
and the full JPEG are served under `/keluarga/{id}/foto/{hash}/kecil|besar` to a logged-in
operator. API: `POST /api/v1/records/{id}/photos?jenis=KIND` with the image as the body,
`GET` the list, `GET .../photos/{hash}?part=kecil|besar` the bytes, `DELETE` one.

An upload may be up to MAX_UPLOAD bytes (the rest of the page keeps its 1 MiB limit); a
bigger one, a file that is not an image, a damaged or cut-short image, or a full disk
gets a clear refusal and nothing is stored (node/photos.py).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from simpul.node.api import NODE_KEY, OPERATOR, error, record_id_of
from simpul.node.web import TEXT, WEB_KEY, Handler, operator_of, page
from simpul.node.web_households import live_record
from simpul.sync.photo_image import MAX_UPLOAD, PhotoRejected
from simpul.sync.photos import FULL, THUMB, photos_of
from simpul.sync.store import OutOfScope, RecordNotFound

log = logging.getLogger(__name__)

UPLOAD_LIMIT = MAX_UPLOAD + 64 * 1024  # the form's other fields and multipart framing
IMAGE_CACHE = "private, max-age=31536000, immutable"  # a hash names these bytes forever


def _is_upload(request: web.Request) -> bool:
    path = request.path
    return request.method == "POST" and (
        (path.startswith("/keluarga/") and path.endswith("/foto"))
        or (path.startswith("/api/v1/records/") and path.endswith("/photos"))
    )


@web.middleware
async def photo_uploads(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Let a photo upload be larger than the node's 1 MiB request limit, and answer one
    over MAX_UPLOAD with the photo's own message."""
    if not _is_upload(request):
        return await handler(request)
    try:
        return await handler(request.clone(client_max_size=UPLOAD_LIMIT))
    except web.HTTPRequestEntityTooLarge:
        log.info("photo refused path=%s reason=too_large", request.path)
        if request.path.startswith("/api/"):
            return error(413, f"photo over {MAX_UPLOAD} bytes", reason="too_large")
        return _refusal(request, 413, "too_large")


def _refusal(request: web.Request, status: int, reason: str) -> web.Response:
    text = request[TEXT]
    key = f"photo.{reason}"
    return page(request, "error.html", status, message=text(key), fix=text("photo.back"))


async def _read_limited(stream: Any) -> bytes:
    """At most MAX_UPLOAD bytes of a body part; HTTPRequestEntityTooLarge beyond."""
    data = bytearray()
    while chunk := await stream.read(256 * 1024):
        data += chunk
        if len(data) > MAX_UPLOAD:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_UPLOAD, actual_size=len(data))
    return bytes(data)


# ----- page -----------------------------------------------------------------------------


async def upload_page(request: web.Request) -> web.Response:
    session = operator_of(request)
    node = request.app[NODE_KEY]
    record = await live_record(request)
    form = await request.post()  # already read (and size-checked) by the CSRF check
    kind = str(form.get("jenis", ""))
    upload = form.get("foto")
    if not kind:
        return _refusal(request, 422, "kind_missing")
    if not isinstance(upload, web.FileField):
        return _refusal(request, 422, "no_file")
    data = upload.file.read(MAX_UPLOAD + 1)
    if not data:
        return _refusal(request, 422, "no_file")
    try:
        await node.photos.add(record["id"], data, kind, session.operator.username)
    except PhotoRejected as exc:
        log.info("photo refused record=%s reason=%s", record["id"], exc.reason)
        return _refusal(request, 422, "kind_missing" if exc.reason == "kind" else exc.reason)
    except OutOfScope:
        return page(request, "error.html", 422, message=request[TEXT]("error.out_of_scope"))
    raise web.HTTPSeeOther(f"/keluarga/{record['id']}#foto")


async def remove_page(request: web.Request) -> web.Response:
    session = operator_of(request)
    node = request.app[NODE_KEY]
    record = await live_record(request)
    digest = request.match_info["hash"]
    if digest not in photos_of(record):
        return _refusal(request, 404, "not_found")
    try:
        await node.photos.remove(record["id"], digest, session.operator.username)
    except OutOfScope:
        return page(request, "error.html", 422, message=request[TEXT]("error.out_of_scope"))
    raise web.HTTPSeeOther(f"/keluarga/{record['id']}#foto")


def _file(request: web.Request, record: dict[str, Any], digest: str, part: str) -> web.Response:
    """The bytes of one photo of `record` (404 unless it references and holds them)."""
    ref = photos_of(record).get(digest)
    store = request.app[NODE_KEY].photos.store
    wanted = ref and (digest if part == FULL else ref[THUMB])
    if not wanted or not store.has(wanted):
        raise web.HTTPNotFound()
    return web.Response(
        body=store.read(wanted),
        content_type="image/jpeg",
        headers={"Cache-Control": IMAGE_CACHE, "X-Content-Type-Options": "nosniff"},
    )


async def image_page(request: web.Request) -> web.Response:
    operator_of(request)
    record = await live_record(request)
    part = request.match_info["part"]
    return _file(request, record, request.match_info["hash"], FULL if part == FULL else THUMB)


# ----- API ------------------------------------------------------------------------------


async def _api_record(request: web.Request) -> dict[str, Any] | web.Response:
    record = await request.app[NODE_KEY].records.get(record_id_of(request))
    if record is None:
        return error(404, "no such record")
    if record["_meta"]["deleted"]:
        return error(410, "record deleted", id=record["id"])
    return record


async def upload_api(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    operator = request[OPERATOR]
    record_id = record_id_of(request)
    if request.content_length is not None and request.content_length > MAX_UPLOAD:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_UPLOAD, actual_size=request.content_length)
    data = await _read_limited(request.content)
    try:
        ref = await node.photos.add(
            record_id, data, request.query.get("jenis", ""), operator.username
        )
    except PhotoRejected as exc:
        return error(422, str(exc), reason=exc.reason)
    except RecordNotFound:
        return error(404, "no such record")
    except OutOfScope as exc:
        return error(422, str(exc), reason="out_of_scope")
    return web.json_response(ref, status=201)


async def list_api(request: web.Request) -> web.Response:
    record = await _api_record(request)
    if isinstance(record, web.Response):
        return record
    store = request.app[NODE_KEY].photos.store
    items = [
        {**ref, "held": store.has(digest), "kecil_held": store.has(ref[THUMB])}
        for digest, ref in photos_of(record).items()
    ]
    return web.json_response({"id": record["id"], "photos": items})


async def image_api(request: web.Request) -> web.Response:
    record = await _api_record(request)
    if isinstance(record, web.Response):
        return record
    part = request.query.get("part", FULL)
    if part not in (FULL, THUMB):
        return error(400, f"part must be {THUMB} or {FULL}")
    try:
        return _file(request, record, request.match_info["hash"], part)
    except web.HTTPNotFound:
        return error(404, "no such photo here (not referenced, or not received yet)")


async def remove_api(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    operator = request[OPERATOR]
    record = await _api_record(request)
    if isinstance(record, web.Response):
        return record
    digest = request.match_info["hash"]
    if digest not in photos_of(record):
        return error(404, "this record has no such photo")
    try:
        await node.photos.remove(record["id"], digest, operator.username)
    except OutOfScope as exc:
        return error(422, str(exc), reason="out_of_scope")
    return web.json_response(await node.records.get(record["id"]))


def add_photo_routes(app: web.Application) -> None:
    """Photo routes, and `photo_held` for the household page's photo section."""
    app[WEB_KEY].templates.globals["photo_held"] = app[NODE_KEY].photos.store.has
    hashed = "{hash:[0-9a-f]{64}}"
    app.router.add_post("/keluarga/{id}/foto", upload_page)
    app.router.add_post(f"/keluarga/{{id}}/foto/{hashed}/hapus", remove_page)
    app.router.add_get(f"/keluarga/{{id}}/foto/{hashed}/{{part:kecil|besar}}", image_page)
    app.router.add_post("/api/v1/records/{id}/photos", upload_api)
    app.router.add_get("/api/v1/records/{id}/photos", list_api)
    app.router.add_get(f"/api/v1/records/{{id}}/photos/{hashed}", image_api)
    app.router.add_delete(f"/api/v1/records/{{id}}/photos/{hashed}", remove_api)
