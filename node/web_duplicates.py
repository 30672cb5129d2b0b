"""The Duplikat page: households that share a NIK or a No. KK, for verifiers to merge or
keep both.

Writes on this node refuse duplicates (sync/duplicates.py); these are the ones that came in
by sync, when two places registered one family offline. "Gabungkan" keeps one household,
adds the other's members it lacks (by NIK) and deletes the other; "Keduanya benar" records
that they are two families, and the pair is not listed again on this node.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from aiohttp import web

from simpul.node.api import NODE_KEY
from simpul.node.runtime import Node
from simpul.node.web import TEXT, Refused, operator_of, page
from simpul.sync import duplicates
from simpul.sync.ids import new_member_id
from simpul.sync.record_doc import MEMBERS
from simpul.sync.store import RecordNotFound

log = logging.getLogger(__name__)

DECIDERS = ("verifier", "admin")
NOTICES = {"gabung": "dup.merged", "biarkan": "dup.kept"}


async def merge(node: Node, keep_id: str, other_id: str, username: str) -> dict[str, Any]:
    """Keep `keep_id` with the members of `other_id` it lacks, then delete `other_id`.

    Two changes: if the second is not written (a crash between them), both households are
    live again and the pair is listed again; nothing is lost.
    """
    other = await node.records.get(other_id)
    if other is None or other["_meta"]["deleted"]:
        raise RecordNotFound(other_id)
    incoming = [{**m, "id": new_member_id()} for m in other[MEMBERS]]

    def with_members(current: dict[str, Any]) -> dict[str, Any]:
        return {**current, MEMBERS: duplicates.merged_members(current[MEMBERS], incoming)}

    kept = await node.records.update(keep_id, with_members, username)
    await node.records.update(other_id, lambda current: current, username, delete=True)
    log.info("duplicate merged keep=%s deleted=%s operator=%s", keep_id, other_id, username)
    return kept


def _ids(form: Any) -> tuple[str, str]:
    try:
        keep, other = (str(uuid.UUID(str(form.get(name, "")))) for name in ("simpan", "lain"))
    except ValueError:
        raise Refused(404, "error.not_found") from None
    return keep, other


async def duplicates_page(request: web.Request) -> web.Response:
    session = operator_of(request)
    node = request.app[NODE_KEY]
    done = NOTICES.get(request.query.get("ok", ""))
    return page(
        request,
        "duplicates.html",
        pairs=await duplicates.pairs(node.db),
        may_decide=session.operator.role in DECIDERS,
        notice=request[TEXT](done) if done else "",
    )


async def merge_pair(request: web.Request) -> web.Response:
    session = operator_of(request, *DECIDERS)
    keep_id, other_id = _ids(await request.post())
    try:
        await merge(request.app[NODE_KEY], keep_id, other_id, session.operator.username)
    except RecordNotFound:
        raise Refused(409, "error.changed") from None
    raise web.HTTPSeeOther("/duplikat?ok=gabung")


async def keep_pair(request: web.Request) -> web.Response:
    session = operator_of(request, *DECIDERS)
    first, second = _ids(await request.post())
    await duplicates.keep_both(request.app[NODE_KEY].db, first, second, session.operator.username)
    log.info(
        "duplicate kept first=%s second=%s operator=%s", first, second, session.operator.username
    )
    raise web.HTTPSeeOther("/duplikat?ok=biarkan")


def add_duplicate_routes(app: web.Application) -> None:
    app.router.add_get("/duplikat", duplicates_page)
    app.router.add_post("/duplikat/gabung", merge_pair)
    app.router.add_post("/duplikat/biarkan", keep_pair)
