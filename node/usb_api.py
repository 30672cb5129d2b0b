"""USB in the JSON API: "use this drive" for an empty drive (the status is in GET /status).

`POST /api/v1/usb/use` with `{"path": "/media/simpul/sdb1"}` (an operator or admin token)
makes the drive a Simpul drive and syncs it at once; the answer is 202 and progress
follows in `GET /api/v1/status` under `usb`.
"""

from __future__ import annotations

from aiohttp import web

from simpul.node.api import OPERATOR, USB_WATCHER, error, read_json
from simpul.node.usb_watcher import NotADrive, UsbWatcher

USERS = ("operator", "admin")


async def use_drive(request: web.Request) -> web.Response:
    if request[OPERATOR].role not in USERS:
        return error(403, "only an operator or an admin may take a drive into use")
    watcher = request.app.get(USB_WATCHER)
    if watcher is None:
        return error(503, "this node does not watch for USB drives")
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("path"), str):
        return error(422, 'expected {"path": DRIVE FOLDER}', fields=[{"field": "path"}])
    try:
        drive = watcher.use(body["path"])
    except (NotADrive, OSError, ValueError) as exc:  # ValueError: a NUL in the path
        return error(422, str(exc), fields=[{"field": "path", "message": str(exc)}])
    return web.json_response({"drive": str(drive), "state": "berjalan"}, status=202)


def add_usb_routes(app: web.Application, watcher: UsbWatcher | None) -> None:
    if watcher is not None:
        app[USB_WATCHER] = watcher
    app.router.add_post("/api/v1/usb/use", use_drive)
