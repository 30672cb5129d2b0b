"""The Admin page: devices of the network (LAN enrollment by six-digit code, revoke),
operator accounts, the USB drive ("gunakan drive ini" and the last sync's outcome), and a
place for the hub settings still to come.

Admin role only. Admitting and revoking need the network root key on this device and its
passphrase, typed into the form; the slow key derivation runs off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from simpul.crypto.enrollment import pairing_code
from simpul.node import membership
from simpul.node.api import NODE_KEY, USB_WATCHER
from simpul.node.cli_support import EXPECTED_ERRORS
from simpul.node.usb_status import read_status
from simpul.node.usb_watcher import NotADrive
from simpul.node.web import TEXT, operator_of, page
from simpul.node.web_text import iso
from simpul.sync.operators import ROLES

log = logging.getLogger(__name__)

ADMIN = "admin"


def devices(data_dir: Any, member: membership.Membership | None) -> list[dict[str, Any]]:
    if member is None:
        return []
    now = datetime.now(UTC)
    names = membership.admitted_devices(data_dir)
    names.setdefault(member.certificate.node_id, member.certificate.name)
    return [
        {"node_id": node_id, "name": name, "revoked": member.revocations.is_revoked(node_id, now)}
        for node_id, name in sorted(names.items(), key=lambda item: item[1])
    ]


async def admin_page(request: web.Request, status: int = 200, **outcome: str) -> web.Response:
    operator_of(request, ADMIN)
    node = request.app[NODE_KEY]
    member = membership.load_membership(node.data_dir)
    admits = member is not None and membership.admits_devices(node.data_dir)
    waiting = membership.pending_requests(node.data_dir) if admits else []
    return page(
        request,
        "admin.html",
        http_status=status,
        member=member,
        admits=admits,
        this_node=node.node_id,
        devices=devices(node.data_dir, member),
        waiting=waiting,
        operators=await node.operators.accounts(),
        tokens=await node.operators.tokens(),
        roles=ROLES,
        usb=read_status(node.data_dir),
        iso=iso,
        watching=request.app.get(USB_WATCHER) is not None,
        done=outcome.get("done", ""),
        failed=outcome.get("failed", ""),
    )


async def admin_view(request: web.Request) -> web.Response:
    return await admin_page(request)


def _admit(data_dir: Any, code: str, scope: str, passphrase: str) -> str:
    request = membership.request_with_code(data_dir, code)
    grant = membership.admit_request(
        data_dir, request, pairing_code(request), passphrase, "office", [scope], None
    )
    membership.store_grant(data_dir, request.node_id, grant)
    return request.node_id


async def admit(request: web.Request) -> web.Response:
    session = operator_of(request, ADMIN)
    form = await request.post()
    data_dir = request.app[NODE_KEY].data_dir
    code, scope = str(form.get("code", "")).strip(), str(form.get("scope", "")).strip()
    try:
        node_id = await asyncio.to_thread(
            _admit, data_dir, code, scope, str(form.get("passphrase", ""))
        )
    except EXPECTED_ERRORS as exc:
        return await admin_page(request, 422, failed=str(exc))
    log.info("page admit node_id=%s by=%s", node_id, session.operator.username)
    return await admin_page(request, done=request[TEXT]("adm.admitted", node=node_id))


async def revoke(request: web.Request) -> web.Response:
    session = operator_of(request, ADMIN)
    form = await request.post()
    data_dir = request.app[NODE_KEY].data_dir
    node_id, reason = str(form.get("node_id", "")), str(form.get("reason", "")).strip()
    try:
        await asyncio.to_thread(
            membership.revoke, data_dir, node_id, reason, str(form.get("passphrase", ""))
        )
    except EXPECTED_ERRORS as exc:
        return await admin_page(request, 422, failed=str(exc))
    log.info("page revoke node_id=%s by=%s", node_id, session.operator.username)
    return await admin_page(request, done=request[TEXT]("adm.revoked_done", node=node_id))


async def add_operator(request: web.Request) -> web.Response:
    operator_of(request, ADMIN)
    form = await request.post()
    name, role = str(form.get("username", "")).strip().lower(), str(form.get("role", ""))
    try:
        await request.app[NODE_KEY].operators.add(name, role, str(form.get("password", "")))
    except EXPECTED_ERRORS as exc:
        return await admin_page(request, 422, failed=str(exc))
    return await admin_page(request, done=request[TEXT]("adm.operator_added", name=name))


async def set_disabled(request: web.Request) -> web.Response:
    """Disable an operator (`/nonaktifkan`) or enable one again (`/aktifkan`)."""
    session = operator_of(request, ADMIN)
    await request.post()  # the CSRF check has read it
    name = request.match_info["name"]
    disabled = request.match_info["action"] == "nonaktifkan"
    if disabled and name == session.operator.username:
        return await admin_page(request, 422, failed=request[TEXT]("adm.not_yourself"))
    try:
        await request.app[NODE_KEY].operators.set_disabled(name, disabled)
    except EXPECTED_ERRORS as exc:
        return await admin_page(request, 422, failed=str(exc))
    log.info("page operator disabled=%s name=%s by=%s", disabled, name, session.operator.username)
    done = "adm.disabled_done" if disabled else "adm.enabled_done"
    return await admin_page(request, done=request[TEXT](done, name=name))


async def reset_password(request: web.Request) -> web.Response:
    session = operator_of(request, ADMIN)
    form = await request.post()
    name = request.match_info["name"]
    try:
        await request.app[NODE_KEY].operators.reset_password(name, str(form.get("password", "")))
    except EXPECTED_ERRORS as exc:
        return await admin_page(request, 422, failed=str(exc))
    log.info("page operator password reset name=%s by=%s", name, session.operator.username)
    return await admin_page(request, done=request[TEXT]("adm.reset_done", name=name))


async def withdraw_token(request: web.Request) -> web.Response:
    session = operator_of(request, ADMIN)
    await request.post()
    try:
        info = await request.app[NODE_KEY].operators.withdraw_token(request.match_info["token"])
    except EXPECTED_ERRORS as exc:
        return await admin_page(request, 422, failed=str(exc))
    log.info("page token withdrawn id=%s by=%s", info.id, session.operator.username)
    return await admin_page(
        request, done=request[TEXT]("adm.withdrawn", id=info.id, name=info.username)
    )


async def use_drive(request: web.Request) -> web.Response:
    """ "Gunakan drive ini": make the drive folder a Simpul drive; the watcher syncs it."""
    session = operator_of(request, ADMIN)
    watcher = request.app.get(USB_WATCHER)
    form = await request.post()
    if watcher is None:
        return await admin_page(request, 422, failed=request[TEXT]("adm.usb_off"))
    try:
        drive = watcher.use(str(form.get("path", "")))
    except (NotADrive, OSError) as exc:
        return await admin_page(request, 422, failed=str(exc))
    log.info("page usb use drive=%s by=%s", drive, session.operator.username)
    return await admin_page(request, done=request[TEXT]("adm.usb_started", drive=drive))


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/admin", admin_view)
    app.router.add_post("/admin/perangkat/terima", admit)
    app.router.add_post("/admin/perangkat/cabut", revoke)
    app.router.add_post("/admin/operator", add_operator)
    app.router.add_post("/admin/operator/{name}/{action:nonaktifkan|aktifkan}", set_disabled)
    app.router.add_post("/admin/operator/{name}/sandi", reset_password)
    app.router.add_post("/admin/token/{token}/tarik", withdraw_token)
    app.router.add_post("/admin/usb", use_drive)
