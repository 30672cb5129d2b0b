"""Data keluarga and Usulan pages: the household list with search, filters and paging; one
household with its history and proposal steps; the household form (new and edit).

Every write goes through the same validation and store as the JSON API, and the audit
trail names the logged-in operator.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import uuid
from typing import Any

from aiohttp import web

from simpul.node.api import NODE_KEY, apply_patch
from simpul.node.web import TEXT, Refused, operator_of, page
from simpul.node.web_household_form import (
    MAX_MEMBERS,
    blank_household,
    blank_member,
    form_errors,
    household_from_form,
    original_of,
    patch_between,
)
from simpul.node.web_names import device_label, device_names, village_label
from simpul.sync import record_stats, regions
from simpul.sync.duplicates import DuplicateHousehold
from simpul.sync.export_households import HouseholdWorkbook
from simpul.sync.household import (
    HUBUNGAN,
    JENIS_KELAMIN,
    PROGRAMS,
    RUMAH_CHOICES,
    STATUS_USULAN,
    ValidationError,
    validate_household,
)
from simpul.sync.proposals import DRAFT, NOTE, TransitionRefused, check_move, moved, moves_for
from simpul.sync.store import OutOfScope, RecordNotFound

log = logging.getLogger(__name__)

PAGE_SIZE = 25
NOTICES = ("hh.saved", "conf.resolved")  # what ?ok= may show after a redirect


def record_id_of(request: web.Request) -> str:
    try:
        return str(uuid.UUID(request.match_info["id"]))
    except ValueError:
        raise Refused(404, "error.not_found") from None


async def live_record(request: web.Request) -> dict[str, Any]:
    record = await request.app[NODE_KEY].records.get(record_id_of(request))
    if record is None or record["_meta"]["deleted"]:
        raise Refused(404, "error.not_found")
    return record


def notice(request: web.Request) -> str:
    key = request.query.get("ok", "")
    return request[TEXT](key) if key in NOTICES else ""


def _page_number(request: web.Request) -> int:
    raw = request.query.get("hal", "1")
    return max(1, int(raw)) if raw.isdigit() else 1


async def search_page(request: web.Request, status: str | None) -> dict[str, Any]:
    """One page of households for the list and the proposals page."""
    node = request.app[NODE_KEY]
    q = request.query.get("q", "").strip()
    village = request.query.get("desa", "").strip()
    number = _page_number(request)
    items, total = await node.records.search(
        q=q or None,
        kode_wilayah=village or None,
        status_usulan=status or None,
        limit=PAGE_SIZE,
        offset=(number - 1) * PAGE_SIZE,
    )
    return {
        "items": items,
        "total": total,
        "q": q,
        "village": village,
        "status": status or "",
        "number": number,
        "pages": max(1, math.ceil(total / PAGE_SIZE)),
    }


async def household_list(request: web.Request) -> web.Response:
    operator_of(request)
    status = request.query.get("status", "")
    found = await search_page(request, status if status in STATUS_USULAN else None)
    node = request.app[NODE_KEY]
    villages = [code for code, _ in await record_stats.by_village(node.db)]
    place = await village_label(node)
    return page(
        request,
        "households.html",
        villages=villages,
        statuses=STATUS_USULAN,
        place=place,
        **found,
    )


async def proposals(request: web.Request) -> web.Response:
    session = operator_of(request)
    default = DRAFT if session.operator.role == "operator" else "diusulkan"
    status = request.query.get("status", default)
    status = status if status in STATUS_USULAN else default
    counts = await record_stats.by_status(request.app[NODE_KEY].db)
    found = await search_page(request, status)
    place = await village_label(request.app[NODE_KEY])
    return page(
        request, "proposals.html", counts=counts, statuses=STATUS_USULAN, place=place, **found
    )


async def household_detail(request: web.Request, **extra: Any) -> web.Response:
    session = operator_of(request)
    node = request.app[NODE_KEY]
    record = await live_record(request)
    history = await node.records.history(record["id"]) or []
    return page(
        request,
        "household.html",
        http_status=extra.pop("status_code", 200),
        record=record,
        history=list(reversed(history)),
        this_node=node.node_id,
        moves=moves_for(session.operator.role, record["status_usulan"]),
        delivered=delivered_to_hub(record),
        notice=notice(request),
        problem_text=extra.pop("problem_text", ""),
        reason=extra.pop("reason", ""),
        head=head_of(record),
        place=await village_label(node),
        device=device_label(await device_names(node)),
    )


def head_of(record: dict[str, Any]) -> dict[str, Any]:
    """The head of household (Kepala Keluarga), else the first member."""
    members = record.get("anggota") or [{}]
    return next((m for m in members if m.get("hubungan") == "Kepala Keluarga"), members[0])


def delivered_to_hub(record: dict[str, Any]) -> bool | None:
    """Whether the hub holds this record's latest change; None while nothing says (the
    uplink and hub frontier are not built yet)."""
    hub = record["_meta"].get("hub")
    return bool(hub.get("delivered")) if isinstance(hub, dict) else None


def form_page(
    request: web.Request,
    household: dict[str, Any],
    errors: dict[str, str],
    record_id: str | None,
    original: dict[str, Any] | None,
    status: int = 200,
    duplicate: DuplicateHousehold | None = None,
) -> web.Response:
    return page(
        request,
        "household_form.html",
        http_status=status,
        duplicate=duplicate,
        household=household,
        errors=errors,
        record_id=record_id,
        original=json.dumps(original, ensure_ascii=False) if original else "",
        choices={
            "program": PROGRAMS,
            "rumah": RUMAH_CHOICES,
            "jenis_kelamin": JENIS_KELAMIN,
            "hubungan": HUBUNGAN,
        },
        max_members=MAX_MEMBERS,
    )


def _editable(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("_meta", "id")}


async def new_form(request: web.Request) -> web.Response:
    operator_of(request)
    return form_page(request, blank_household(), {}, None, None)


async def edit_form(request: web.Request) -> web.Response:
    operator_of(request)
    record = await live_record(request)
    return form_page(request, _editable(record), {}, record["id"], _editable(record))


async def save_form(request: web.Request) -> web.Response:
    """Create (no id) or edit a household; re-show the form with its errors, or with one
    more empty member for "tambah anggota"."""
    session = operator_of(request)
    node = request.app[NODE_KEY]
    form = await request.post()
    record_id = record_id_of(request) if "id" in request.match_info else None
    original = original_of(form) if record_id else None
    household = household_from_form(form)
    if form.get("aksi") == "tambah" and len(household["anggota"]) < MAX_MEMBERS:
        household["anggota"].append(blank_member())
        return form_page(request, household, {}, record_id, original)
    status = (original or {}).get("status_usulan", DRAFT)
    note = (original or {}).get(NOTE, "")
    try:
        valid = validate_household({**household, "status_usulan": status, NOTE: note})
        if record_id is None:
            created = await node.records.create(
                valid, session.operator.username, refuse_duplicates=True
            )
            record_id = created["id"]
        else:
            patch = patch_between(original or {}, valid)
            if patch:
                await node.records.update(
                    record_id,
                    lambda current: apply_patch(current, patch),
                    session.operator.username,
                    refuse_duplicates=True,
                )
    except ValidationError as exc:
        errors = form_errors(exc.errors, request[TEXT])
        return form_page(request, household, errors, record_id, original, status=422)
    except OutOfScope:
        errors = {"kode_wilayah": request[TEXT]("error.out_of_scope")}
        return form_page(request, household, errors, record_id, original, status=422)
    except DuplicateHousehold as exc:
        errors = {duplicate_field(household, exc): request[TEXT]("dup.here")}
        return form_page(request, household, errors, record_id, original, 409, exc)
    except RecordNotFound:
        raise Refused(404, "error.not_found") from None
    log.info("page save id=%s operator=%s", record_id, session.operator.username)
    raise web.HTTPSeeOther(f"/keluarga/{record_id}?ok=hh.saved")


def duplicate_field(household: dict[str, Any], exc: DuplicateHousehold) -> str:
    """The form field (its error key) holding the identifier another household has."""
    if exc.field == "no_kk":
        return "no_kk"
    for index, member in enumerate(household["anggota"]):
        if str(member.get("nik", "")).strip() == exc.value:
            return f"anggota[{index}].nik"
    return "anggota"


async def move_proposal(request: web.Request) -> web.Response:
    """One proposal step (`ke` = target status, `alasan` = reason) if the role may take it."""
    session = operator_of(request)
    node = request.app[NODE_KEY]
    form = await request.post()
    target, reason = str(form.get("ke", "")), str(form.get("alasan", ""))
    record = await live_record(request)
    try:
        check_move(session.operator.role, record["status_usulan"], target, reason)
    except TransitionRefused as exc:
        log.warning(
            "page proposal refused id=%s from=%s to=%s role=%s",
            record["id"],
            record["status_usulan"],
            target,
            session.operator.role,
        )
        if exc.forbidden:
            raise Refused(403, "error.forbidden") from None
        text = request[TEXT]("prop.need_reason")
        return await household_detail(request, status_code=422, problem_text=text, reason=reason)

    def step(current: dict[str, Any]) -> dict[str, Any]:
        check_move(session.operator.role, current["status_usulan"], target, reason)
        return validate_household(moved(current, target, reason))

    try:
        await node.records.update(record["id"], step, session.operator.username)
    except (TransitionRefused, ValidationError, OutOfScope):  # changed since checked above
        raise Refused(409, "error.changed") from None
    log.info(
        "page proposal id=%s to=%s operator=%s", record["id"], target, session.operator.username
    )
    raise web.HTTPSeeOther(f"/keluarga/{record['id']}")


async def download_xlsx(request: web.Request) -> web.Response:
    """The list as an Excel workbook: every household, or one village (`desa`) and/or one
    proposal status (`status`), e.g. the list a village meeting discusses."""
    session = operator_of(request)
    node = request.app[NODE_KEY]
    village = request.query.get("desa", "").strip()
    status = request.query.get("status", "")
    status = status if status in STATUS_USULAN else ""
    chosen = [
        record
        async for record in node.records.iter_all()
        if (not village or record["kode_wilayah"] == village)
        and (not status or record["status_usulan"] == status)
    ]
    names = await regions.all_names(node.db)

    def build() -> bytes:
        book = HouseholdWorkbook(names)
        for record in chosen:
            book.add(record)
        out = io.BytesIO()
        book.save(out)
        return out.getvalue()

    body = await asyncio.to_thread(build)
    filename = "-".join(["keluarga", *(part for part in (village, status) if part)]) + ".xlsx"
    log.info(
        "page export xlsx households=%d village=%s status=%s operator=%s",
        len(chosen),
        village or "-",
        status or "-",
        session.operator.username,
    )
    return web.Response(
        body=body,
        content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def add_household_routes(app: web.Application) -> None:
    app.router.add_get("/ekspor.xlsx", download_xlsx)
    app.router.add_get("/keluarga", household_list)
    app.router.add_get("/keluarga/baru", new_form)
    app.router.add_post("/keluarga/baru", save_form)
    app.router.add_get("/keluarga/{id}", household_detail)
    app.router.add_get("/keluarga/{id}/ubah", edit_form)
    app.router.add_post("/keluarga/{id}/ubah", save_form)
    app.router.add_post("/keluarga/{id}/usulan", move_proposal)
    app.router.add_get("/usulan", proposals)
