"""The JSON API (`/api/v1`): household records, search, history and status, behind bearer tokens.

Errors are JSON: 400 for a body that is not JSON or a bad query parameter, 422 with
`fields` naming each invalid field, 401 without a valid token, 403 for a step the
operator's role may not take (a proposal status outside the workflow of sync/proposals.py,
a delete or a conflict resolution by a plain operator), 404 for an unknown id, 409 for an
id already taken or a No. KK / member NIK another live household holds (`id` names it),
410 for a deleted record, 503 while the clock is behind the node's floor.
An unknown address, a wrong method, a body over 1 MiB and an unexpected failure are JSON too
(node/http_errors.py). Nothing is written on error.

The API is described by an OpenAPI document, `node/openapi.json`, which the node serves at
`GET /api/v1/openapi.json` (tests/test_api_fuzz.py fuzzes the running node against it).
"""

from __future__ import annotations

import json
import logging
import unicodedata
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from simpul.node.clock_floor import TOLERANCE_MS, ClockBehind
from simpul.node.delivery import mark_delivered
from simpul.node.node_status import status_of
from simpul.node.runtime import Node
from simpul.node.usb_watcher import UsbWatcher
from simpul.sync import duplicates
from simpul.sync.conflicts import UnknownField, field_name, parse_field
from simpul.sync.duplicates import DuplicateHousehold
from simpul.sync.household import (
    FieldError,
    ValidationError,
    validate_fields,
    validate_household,
    validate_member,
)
from simpul.sync.ids import new_member_id
from simpul.sync.operators import Operator
from simpul.sync.proposals import DRAFT, NOTE, TransitionRefused, check_api_status
from simpul.sync.record_doc import MEMBERS
from simpul.sync.store import OutOfScope, RecordExists, RecordNotFound

log = logging.getLogger(__name__)

NODE_KEY = web.AppKey("node", Node)
USB_WATCHER = web.AppKey("usb_watcher", UsbWatcher)
OPERATOR = web.RequestKey("operator", Operator)
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_TERM = 200  # a search term; no field of a record is longer
MAX_BODY = 1024 * 1024
OPENAPI = Path(__file__).with_name("openapi.json")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def duplicate(exc: DuplicateHousehold) -> web.Response:
    """409 naming the live household that already holds the NIK or No. KK."""
    log.info("record refused duplicate field=%s other=%s", exc.field, exc.other.id)
    return error(409, str(exc), id=exc.other.id, field=exc.field, value=exc.value)


def invalid(errors: list[FieldError]) -> web.Response:
    fields = [{"field": e.field, "message": e.message} for e in errors]
    return error(422, "validation failed", fields=fields)


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /api/ request needs `Authorization: Bearer TOKEN` of an operator."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    operator = None
    if scheme.lower() == "bearer" and token.strip():
        operator = await request.app[NODE_KEY].operators.by_token(token.strip())
    if operator is None:
        log.info("api auth refused path=%s remote=%s", request.path, request.remote)
        return error(401, "a valid bearer token is required", hint="simpul token create NAME")
    request[OPERATOR] = operator
    return await handler(request)


@web.middleware
async def refuse_wrong_clock(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No API write while the clock is behind the node's floor: ClockBehind, answered 503
    by node/http_errors.py, checked before validation, which judges dates by the same
    wrong clock."""
    clock = request.app[NODE_KEY].clock
    writes = request.method not in ("GET", "HEAD", "OPTIONS") and request.path.startswith("/api/")
    if writes and clock.behind_ms() > TOLERANCE_MS:
        raise ClockBehind(clock.refusal())
    return await handler(request)


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; 400 for one that is not JSON, nests absurdly deep, or holds
    text that is not Unicode (a lone surrogate such as "\\ud800", which no store can keep)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    try:
        body = json.loads(await request.read())
        # json.dumps walks every value: it finds the lone surrogates that json.loads lets in
        json.dumps(body, ensure_ascii=False).encode()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"body is not valid JSON: {exc}") from None
    except UnicodeEncodeError:
        raise bad_request("body holds text that is not valid Unicode (a lone surrogate)") from None
    except RecursionError:
        raise bad_request("body nests arrays or objects too deeply") from None
    return body


def record_id_of(request: web.Request) -> str:
    try:
        return str(uuid.UUID(request.match_info["id"]))
    except ValueError:
        raise web.HTTPNotFound(
            text=json.dumps({"error": "no such record"}), content_type="application/json"
        ) from None


def apply_patch(current: dict[str, Any], body: Any) -> dict[str, Any]:
    """The household after a PATCH body: top-level fields, and member add/update/remove.

    `rumah` may be partial. Member operations go under `anggota`:
    `{"add": [member, ...], "update": {member_id: {field: value}}, "remove": [member_id]}`.
    Raises ValidationError naming every bad field.
    """
    if not isinstance(body, dict) or not body:
        raise ValidationError([FieldError("", "expected a JSON object with fields to change")])
    fields = {k: v for k, v in body.items() if k != MEMBERS}
    if isinstance(fields.get("rumah"), dict) and isinstance(current.get("rumah"), dict):
        fields["rumah"] = {**current["rumah"], **fields["rumah"]}
    errors: list[FieldError] = []
    target = dict(current)
    if fields:
        try:
            target.update(validate_fields(fields))
        except ValidationError as exc:
            errors += exc.errors
    if MEMBERS in body:
        try:
            target[MEMBERS] = apply_member_ops(current.get(MEMBERS, []), body[MEMBERS])
        except ValidationError as exc:
            errors += exc.errors
    if errors:
        raise ValidationError(errors)
    return validate_household(target)


def _prefixed(exc: ValidationError, prefix: str) -> list[FieldError]:
    return [FieldError(f"{prefix}.{e.field}" if e.field else prefix, e.message) for e in exc.errors]


def apply_member_ops(members: list[dict[str, Any]], ops: Any) -> list[dict[str, Any]]:
    if not isinstance(ops, dict) or not set(ops) <= {"add", "update", "remove"}:
        raise ValidationError(
            [FieldError(MEMBERS, "expected an object with 'add', 'update' and/or 'remove'")]
        )
    errors: list[FieldError] = []
    by_id = {m["id"]: dict(m) for m in members}
    remove = ops.get("remove", [])
    update = ops.get("update", {})
    add = ops.get("add", [])
    if not isinstance(remove, list):
        errors.append(FieldError("anggota.remove", "expected a list of member ids"))
        remove = []
    if not isinstance(update, dict):
        errors.append(FieldError("anggota.update", "expected an object member id -> fields"))
        update = {}
    if not isinstance(add, list):
        errors.append(FieldError("anggota.add", "expected a list of members"))
        add = []
    for index, member_id in enumerate(remove):
        if not isinstance(member_id, str):
            errors.append(FieldError(f"anggota.remove[{index}]", "expected a member id"))
        elif by_id.pop(member_id, None) is None:
            errors.append(FieldError(f"anggota.remove[{member_id}]", "no member with this id"))
    for member_id, changes in update.items():
        where = f"anggota.update[{member_id}]"
        if member_id not in by_id:
            errors.append(FieldError(where, "no member with this id"))
            continue
        try:
            validate_member(changes, partial=True)
            by_id[member_id] = {**validate_member({**by_id[member_id], **changes}), "id": member_id}
        except ValidationError as exc:
            errors += _prefixed(exc, where)
    added = []
    for index, member in enumerate(add):
        try:
            added.append({**validate_member(member), "id": new_member_id()})
        except ValidationError as exc:
            errors += _prefixed(exc, f"anggota.add[{index}]")
    if errors:
        raise ValidationError(errors)
    return [by_id[m["id"]] for m in members if m["id"] in by_id] + added


async def create_record(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    body = await read_json(request)
    if isinstance(body, dict) and "status_usulan" not in body:
        body = {**body, "status_usulan": DRAFT}  # a new household starts as a draft
    try:
        household = validate_household(body)
    except ValidationError as exc:
        return invalid(exc.errors)
    operator: Operator = request[OPERATOR]
    try:
        check_api_status(operator.role, None, household["status_usulan"], "")
        record = await node.records.create(
            household, operator.username, household.get("id"), refuse_duplicates=True
        )
    except TransitionRefused as exc:
        return error(403, str(exc))
    except DuplicateHousehold as exc:
        return duplicate(exc)
    except OutOfScope as exc:
        return invalid([FieldError("kode_wilayah", str(exc))])
    except RecordExists:
        return error(409, "a record with this id already exists", id=household.get("id"))
    log.info("record create id=%s operator=%s", record["id"], operator.username)
    await mark_delivered(node, [record])
    return web.json_response(record, status=201)


RESOLVERS = ("verifier", "admin")
DELETERS = ("verifier", "admin")


async def settle_conflict(
    node: Node, record_id: str, field: str, value: Any, operator: Operator
) -> dict[str, Any]:
    """Write a verifier's choice for a conflicted field; the record after it.

    Raises RecordNotFound, UnknownField or ValidationError (the value does not fit).
    """
    current = await node.records.get(record_id)
    if current is None or current["_meta"]["deleted"]:
        raise RecordNotFound(record_id)
    path = parse_field(field)
    record = await node.records.resolve(
        record_id, path, chosen_value(current, path, value), operator.username
    )
    log.info("record resolve id=%s field=%s operator=%s", record_id, field, operator.username)
    return record


async def resolve_conflict(request: web.Request) -> web.Response:
    """A verifier settles a conflicted field: `{"field": "rumah.atap", "value": "Seng"}`."""
    node = request.app[NODE_KEY]
    operator: Operator = request[OPERATOR]
    if operator.role not in RESOLVERS:
        return error(403, "only a verifier or an admin may resolve conflicts")
    record_id = record_id_of(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("field"), str) or "value" not in body:
        return invalid([FieldError("", 'expected {"field": NAME, "value": VALUE}')])
    try:
        record = await settle_conflict(node, record_id, body["field"], body["value"], operator)
    except UnknownField as exc:
        return invalid([FieldError("field", str(exc))])
    except ValidationError as exc:
        return invalid(exc.errors)
    except RecordNotFound:
        return error(404, "no such record")
    return web.json_response(record)


def chosen_value(record: dict[str, Any], path: tuple[str, ...], value: Any) -> Any:
    """`value` validated and normalised as it would stand at `path` in `record`."""
    household = {k: v for k, v in record.items() if k not in ("_meta", "id")}
    if path[0] == MEMBERS and len(path) != 3:
        raise UnknownField("a member's field is named anggota[MEMBER_ID].FIELD")
    if path[0] == MEMBERS:
        members = household.get(MEMBERS, [])
        index = next((i for i, m in enumerate(members) if m["id"] == path[1]), None)
        if index is None or path[2] not in members[index]:
            raise UnknownField(f"{field_name(path)} is not a field of this record")
        members[index] = {**members[index], path[2]: value}
        return validate_household(household)[MEMBERS][index][path[2]]
    if len(path) == 2:
        if not isinstance(household.get(path[0]), dict):
            raise UnknownField(f"{field_name(path)} is not a field of this record")
        household[path[0]] = {**household[path[0]], path[1]: value}
        return validate_household(household)[path[0]][path[1]]
    if path[0] not in household:
        raise UnknownField(f"{field_name(path)} is not a field of this record")
    household[path[0]] = value
    return validate_household(household)[path[0]]


async def get_record(request: web.Request) -> web.Response:
    record = await request.app[NODE_KEY].records.get(record_id_of(request))
    if record is None:
        return error(404, "no such record")
    if record["_meta"]["deleted"]:
        return error(410, "record deleted", id=record["id"], _meta=record["_meta"])
    await mark_delivered(request.app[NODE_KEY], [record])
    return web.json_response(record)


async def patch_record(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    record_id = record_id_of(request)
    body = await read_json(request)
    operator: Operator = request[OPERATOR]

    def edit(current: dict[str, Any]) -> dict[str, Any]:
        target = apply_patch(current, body)
        reason = str(target.get(NOTE, ""))
        check_api_status(operator.role, current["status_usulan"], target["status_usulan"], reason)
        return target

    try:
        record = await node.records.update(
            record_id, edit, operator.username, refuse_duplicates=True
        )
    except RecordNotFound:
        return error(404, "no such record")
    except DuplicateHousehold as exc:
        return duplicate(exc)
    except ValidationError as exc:
        return invalid(exc.errors)
    except OutOfScope as exc:
        return invalid([FieldError("kode_wilayah", str(exc))])
    except TransitionRefused as exc:
        if exc.forbidden:
            return error(403, str(exc))
        return invalid([FieldError(NOTE, str(exc))])
    log.info("record patch id=%s operator=%s", record_id, operator.username)
    await mark_delivered(node, [record])
    return web.json_response(record)


async def delete_record(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    record_id = record_id_of(request)
    operator: Operator = request[OPERATOR]
    if operator.role not in DELETERS:
        return error(403, "only a verifier or an admin may delete a household")
    try:
        record = await node.records.update(
            record_id, lambda current: current, operator.username, delete=True
        )
    except RecordNotFound:
        return error(404, "no such record")
    log.info("record delete id=%s operator=%s", record_id, operator.username)
    return web.json_response(record)


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise bad_request(f"{name} must be a whole number from {low} to {high}")
    return value


def _text_param(request: web.Request, name: str) -> str | None:
    """A search term: at most MAX_TERM characters, none of them a control character (no
    record holds one, and SQLite's full-text query parser stops at a NUL)."""
    value = request.query.get(name) or None
    if value is not None and (
        len(value) > MAX_TERM or any(unicodedata.category(c) in ("Cc", "Cs") for c in value)
    ):
        raise bad_request(f"{name} must be at most {MAX_TERM} characters, none of them control")
    return value


async def list_records(request: web.Request) -> web.Response:
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    items, total = await request.app[NODE_KEY].records.search(
        q=_text_param(request, "q"),
        kode_wilayah=_text_param(request, "kode_wilayah"),
        status_usulan=_text_param(request, "status_usulan"),
        limit=limit,
        offset=offset,
    )
    await mark_delivered(request.app[NODE_KEY], items)
    return web.json_response({"items": items, "total": total, "limit": limit, "offset": offset})


async def record_history(request: web.Request) -> web.Response:
    history = await request.app[NODE_KEY].records.history(record_id_of(request))
    if history is None:
        return error(404, "no such record")
    return web.json_response({"id": request.match_info["id"], "changes": history})


async def list_duplicates(request: web.Request) -> web.Response:
    """Pairs of live households sharing a NIK or No. KK (mostly from sync), not yet kept."""
    found = await duplicates.pairs(request.app[NODE_KEY].db)
    items = [
        {
            "households": [
                {"id": h.id, "no_kk": h.no_kk, "nama": h.nama} for h in (p.first, p.second)
            ],
            "shared": list(p.shared),
        }
        for p in found
    ]
    return web.json_response({"items": items, "total": len(items)})


async def node_status(request: web.Request) -> web.Response:
    facts = await status_of(request.app[NODE_KEY])
    watcher = request.app.get(USB_WATCHER)
    if watcher is not None:
        facts["usb"] = {**(facts["usb"] or {}), "empty_drives": watcher.empty_drives()}
    return web.json_response(facts)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI.read_bytes(), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/api/v1/records", create_record)
    app.router.add_get("/api/v1/records", list_records)
    app.router.add_get("/api/v1/records/{id}", get_record)
    app.router.add_patch("/api/v1/records/{id}", patch_record)
    app.router.add_delete("/api/v1/records/{id}", delete_record)
    app.router.add_get("/api/v1/records/{id}/history", record_history)
    app.router.add_post("/api/v1/records/{id}/resolve", resolve_conflict)
    app.router.add_get("/api/v1/duplicates", list_duplicates)
    app.router.add_get("/api/v1/status", node_status)
    app.router.add_get("/api/v1/openapi.json", openapi_document)
