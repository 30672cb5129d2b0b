"""LAN enrollment over HTTP: a new device posts its signed request, then fetches its grant.

No token is needed: a request carries only public keys and is signed by the device; the
admin admits it only after typing the six-digit code shown on the device, so another
device on the same WiFi cannot slip in. A grant holds public certificates and the data
key encrypted to the requesting device alone.

Requests wait at most PENDING_SECONDS, and one network address may have only
MAX_PENDING_PER_SOURCE waiting (429 beyond that, 503 when the whole queue is full), so a
neighbour posting junk requests cannot keep the real device out (node/membership.py).
"""

from __future__ import annotations

import logging

from aiohttp import web

from simpul.crypto.enrollment import EnrollmentError, EnrollmentRequest
from simpul.node.api import NODE_KEY, error
from simpul.node.membership import (
    MembershipError,
    TooManyWaiting,
    admits_devices,
    pending_grant,
    store_pending_request,
)

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 16 * 1024


async def post_request(request: web.Request) -> web.Response:
    data_dir = request.app[NODE_KEY].data_dir
    if not admits_devices(data_dir):
        return error(404, "this node does not admit devices (the network root key is elsewhere)")
    body = await request.content.read(MAX_REQUEST_BYTES + 1)
    if len(body) > MAX_REQUEST_BYTES:
        return error(413, "enrollment request too large")
    try:
        enrollment = EnrollmentRequest.from_bytes(body)
        store_pending_request(data_dir, enrollment, request.remote or "unknown")
    except EnrollmentError as exc:
        return error(400, f"not a valid enrollment request: {exc}")
    except TooManyWaiting as exc:
        log.warning("enroll request refused reason=queue-full remote=%s", request.remote)
        return error(503 if exc.whole_queue else 429, str(exc))
    except MembershipError as exc:
        return error(503, str(exc))
    log.info(
        "enroll request node_id=%s name=%r remote=%s",
        enrollment.node_id,
        enrollment.name,
        request.remote,
    )
    return web.json_response({"node_id": enrollment.node_id, "status": "waiting"}, status=202)


async def get_grant(request: web.Request) -> web.Response:
    grant = pending_grant(request.app[NODE_KEY].data_dir, request.match_info["node_id"])
    if grant is None:
        return error(404, "not admitted (yet)")
    return web.Response(body=grant, content_type="application/json")


def add_enroll_routes(app: web.Application) -> None:
    app.router.add_post("/enroll/requests", post_request)
    app.router.add_get("/enroll/grants/{node_id}", get_grant)
