"""Beranda (the dashboard) and Konflik (settling concurrent edits) of the operator page.

Beranda shows what the node's status says: households by proposal status and village,
entries refused (in red, with the reason), peers with their state and last sync, conflicts
waiting; hub delivery, USB and uplink show a plain
"belum tersedia" until the node reports them (keys `hub`, `usb`, `uplink` of the status).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from simpul.node.api import NODE_KEY, RESOLVERS, settle_conflict, status_of
from simpul.node.web import TEXT, WEB_KEY, Refused, operator_of, page
from simpul.node.web_households import live_record, notice
from simpul.node.web_names import device_label, device_names, village_label
from simpul.node.web_text import iso
from simpul.sync import record_stats
from simpul.sync.conflicts import UnknownField
from simpul.sync.household import STATUS_USULAN, ValidationError
from simpul.sync.store import RecordNotFound

log = logging.getLogger(__name__)

VILLAGES_SHOWN = 10
CONFLICTS_SHOWN = 50
ONLINE_MS = 2 * 60 * 1000  # a peer seen or synced this recently counts as online
PLANNED_PARTS = ("hub", "usb", "uplink")


def peer_rows(peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    now = time.time() * 1000
    rows = []
    for peer in peers:
        latest = max(peer.get("last_seen_ms") or 0, peer.get("last_sync_ms") or 0)
        rows.append({**peer, "online": bool(latest) and now - latest < ONLINE_MS})
    return rows


async def dashboard(request: web.Request) -> web.Response:
    operator_of(request)
    node = request.app[NODE_KEY]
    status = await status_of(node)
    villages = await record_stats.by_village(node.db)
    busiest = sorted(villages, key=lambda village: (-village[1], village[0]))[:VILLAGES_SHOWN]
    _, conflicts = await request.app[WEB_KEY].conflicts.conflicted(0)
    return page(
        request,
        "dashboard.html",
        facts=status,
        by_status=await record_stats.by_status(node.db),
        statuses=STATUS_USULAN,
        villages=busiest,
        village_total=len(villages),
        peers=peer_rows(status["peers"]),
        names={p["node_id"]: p["name"] for p in status["peers"] if p["node_id"] and p["name"]},
        conflicts=conflicts,
        planned={part: status.get(part) for part in PLANNED_PARTS},
        iso=iso,
        place=await village_label(node),
    )


def typed_value(raw: str, competing: list[Any]) -> Any:
    """A typed correction as the field's type: a number when the competing values are."""
    text = raw.strip()
    numeric = all(isinstance(v, int) and not isinstance(v, bool) for v in competing)
    return int(text) if numeric and text.lstrip("-").isdigit() else text


async def conflicts_page(request: web.Request, **extra: Any) -> web.Response:
    session = operator_of(request)
    records, total = await request.app[WEB_KEY].conflicts.conflicted(CONFLICTS_SHOWN)
    node = request.app[NODE_KEY]
    return page(
        request,
        "conflicts.html",
        device=device_label(await device_names(node)),
        place=await village_label(node),
        http_status=extra.pop("status_code", 200),
        records=records,
        total=total,
        may_resolve=session.operator.role in RESOLVERS,
        notice=notice(request),
        problem_text=extra.pop("problem_text", ""),
    )


async def resolve(request: web.Request) -> web.Response:
    """A verifier's choice for one conflicted field: `pilih` (index of a competing value)
    or `nilai_lain` (a typed value)."""
    session = operator_of(request, *RESOLVERS)
    node = request.app[NODE_KEY]
    record = await live_record(request)
    form = await request.post()
    field = str(form.get("field", ""))
    conflict = next((c for c in record["_meta"]["conflicts"] if c["field"] == field), None)
    if conflict is None:
        raise Refused(404, "error.not_found")
    competing = [v["value"] for v in conflict["values"]]
    typed, picked = str(form.get("nilai_lain", "")), str(form.get("pilih", ""))
    if typed.strip():
        value = typed_value(typed, competing)
    elif picked.isdigit() and int(picked) < len(competing):
        value = competing[int(picked)]
    else:
        text = request[TEXT]("conf.pick_one")
        return await conflicts_page(request, status_code=422, problem_text=text)
    try:
        await settle_conflict(node, record["id"], field, value, session.operator)
    except ValidationError as exc:
        message = "; ".join(request[TEXT].validation(e.message) for e in exc.errors)
        return await conflicts_page(request, status_code=422, problem_text=message)
    except (UnknownField, RecordNotFound):
        raise Refused(404, "error.not_found") from None
    raise web.HTTPSeeOther("/konflik?ok=conf.resolved")


def add_dashboard_routes(app: web.Application) -> None:
    app.router.add_get("/", dashboard)
    app.router.add_get("/konflik", conflicts_page)
    app.router.add_post("/konflik/{id}", resolve)
