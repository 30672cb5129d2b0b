"""How the node answers a request that fails: the operator's error page for page routes,
JSON for the API, never a traceback or aiohttp's plain-text default.

`answer_failures` is the outermost middleware. For a page (not /api/, /enroll/, /healthz,
/metrics) it renders `error.html` in the operator's language: 404 for an unknown address,
405 for a wrong method, 413 for a body over the size limit, 503 with what to do when a
write meets a clock behind the floor (decision 0008), 500 for anything unexpected (logged
with its traceback as `request failed`), 507 when the disk is full (the write was rolled
back whole, sync/database.py). An /api/ failure keeps the API's JSON shape.
Other paths (enrollment, health, metrics) keep aiohttp's own answers, and a file missing
under /static/ (only the style sheet lives there) an empty 404 from aiohttp's file response.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from simpul.node.api import error
from simpul.node.clock_floor import ClockBehind
from simpul.node.web import TEXT, clock_text, is_page, language_of, page, problem
from simpul.node.web_text import Text
from simpul.sync.database import DiskFull

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PAGE_MESSAGES = {
    404: "error.no_page",
    405: "error.method",
    413: "error.too_large",
}
KEPT_HEADERS = ("Allow",)  # a 405 says which methods the address takes


def page_message(status: int) -> str:
    """The catalogue key a page failure with this status is explained by."""
    if status in PAGE_MESSAGES:
        return PAGE_MESSAGES[status]
    return "error.unexpected" if status >= 500 else "error.bad_request"


def is_api(path: str) -> bool:
    return path.startswith("/api/")


@web.middleware
async def answer_failures(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure of a page or API request answered in that audience's form."""
    for_page = is_page(request.path)
    if not (for_page or is_api(request.path)):
        return await handler(request)
    if for_page:
        request[TEXT] = Text(language_of(request))
    try:
        return await handler(request)
    except ClockBehind as exc:
        log.warning("write refused path=%s reason=clock behind", request.path)
        if not for_page:
            return error(503, str(exc), hint="simpul doctor")
        message, fix = clock_text(request, "clock.refused"), request[TEXT]("clock.fix")
        return page(request, "error.html", 503, message=message, fix=fix, clock_warning="")
    except DiskFull as exc:
        log.warning("write refused path=%s reason=disk full", request.path)
        if not for_page:
            return error(507, str(exc), hint="simpul doctor")
        return problem(request, 507, "error.disk_full")
    except web.HTTPException as exc:
        if exc.status < 400 or (not for_page and exc.content_type == "application/json"):
            raise
        log.info(
            "request refused path=%s method=%s status=%d", request.path, request.method, exc.status
        )
        if for_page:
            answer = problem(request, exc.status, page_message(exc.status))
        else:
            answer = error(exc.status, exc.reason.lower())
        answer.headers.update({k: v for k, v in exc.headers.items() if k in KEPT_HEADERS})
        return answer
    except Exception as exc:
        reason = type(exc).__name__
        log.exception(
            "request failed path=%s method=%s error=%s", request.path, request.method, reason
        )
        if for_page:
            return problem(request, 500, "error.unexpected")
        return error(500, "internal error: the node's log says more", hint="simpul doctor")
