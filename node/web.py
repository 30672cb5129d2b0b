"""The operator page's plumbing: templates, the session and CSRF middleware, roles, login,
logout, the language setting and the page's own static files.

Every page needs a session (GET without one redirects to the login page; anything else
answers 401); every POST needs the CSRF token of its form (403 without it). Before login,
the login and language forms carry a token bound to a pre-session cookie instead. The JSON
API (`/api/`, bearer tokens), `/healthz`, `/metrics` and LAN enrollment (`/enroll/`) keep
their own rules. Pages are rendered on the server with jinja2 and need no JavaScript; a
failed page request gets the error page (node/http_errors.py), and a form whose bytes are
not text in its charset (invalid UTF-8, an unknown charset) a 400 page.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from simpul.node.api import NODE_KEY
from simpul.node.clock_floor import TOLERANCE_MS, ClockBehind
from simpul.node.web_sessions import MAX_PASSWORD, MAX_USERNAME, Locked, Session, Sessions
from simpul.node.web_text import DEFAULT_LANGUAGE, LANGUAGES, Text, iso
from simpul.sync.record_stats import ConflictIndex

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SESSION_COOKIE = "simpul_session"
PRE_COOKIE = "simpul_pre"  # pre-login CSRF (double submit) for the login and language forms
LANG_COOKIE = "simpul_lang"
OWN_PREFIXES = ("/api/", "/enroll/")  # not pages: these keep their own rules
OWN_PATHS = ("/healthz", "/metrics")
PUBLIC_PATHS = ("/masuk", "/bahasa")  # the login form and the language switch before login
SESSION_PATHS = (*PUBLIC_PATHS, "/keluar")  # posts that touch only the session or a cookie
PUBLIC_PREFIX = "/static/"  # the style sheet: no data in it
SECURITY_HEADERS = {
    # nothing but this node's own origin: no CDN, no web font, no script at all
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Web:
    """What the pages share: templates, the session store, the conflicted records."""

    templates: jinja2.Environment
    sessions: Sessions
    conflicts: ConflictIndex


WEB_KEY = web.AppKey("web", Web)
SESSION = web.RequestKey("session", Session)
TEXT = web.RequestKey("text", Text)


class Refused(Exception):
    """Raised by a page handler: answer `status` with the catalogue message `key`."""

    def __init__(self, status: int, key: str) -> None:
        super().__init__(key)
        self.status = status
        self.key = key


def make_web(app: web.Application) -> Web:
    node = app[NODE_KEY]
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return Web(templates, Sessions(node.db, node.operators), ConflictIndex(node.records))


def is_page(path: str) -> bool:
    return not (path.startswith(OWN_PREFIXES) or path in OWN_PATHS)


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX)


def language_of(request: web.Request) -> str:
    lang = request.cookies.get(LANG_COOKIE, "")
    return lang if lang in LANGUAGES else DEFAULT_LANGUAGE


def _same(a: str, b: str) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def csrf_of(request: web.Request) -> str:
    """The token this request's forms must carry."""
    session = request.get(SESSION)
    return session.csrf if session else request.cookies.get(PRE_COOKIE, "")


@web.middleware
async def page_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Session, CSRF and language for every page request; no post but a login, logout or
    language switch while the clock is behind the floor (ClockBehind, checked before the
    form is validated against the same wrong clock)."""
    if not is_page(request.path):
        return await handler(request)
    request[TEXT] = Text(language_of(request))
    cookie = request.cookies.get(SESSION_COOKIE, "")
    session = await request.app[WEB_KEY].sessions.find(cookie) if cookie else None
    if session is not None:
        request[SESSION] = session
    elif not _is_public(request.path):
        log.info("page refused path=%s reason=no-session remote=%s", request.path, request.remote)
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther("/masuk")
        return problem(request, 401, "login.expired")
    if request.method == "POST":
        try:
            form = await request.post()
        except (UnicodeDecodeError, LookupError):  # bytes or a charset that are not text
            log.info(
                "page refused path=%s reason=form-encoding remote=%s", request.path, request.remote
            )
            return problem(request, 400, "error.bad_request")
        if not _same(str(form.get("csrf", "")), csrf_of(request)):
            log.warning("page refused path=%s reason=csrf remote=%s", request.path, request.remote)
            return problem(request, 403, "error.csrf")
        if request.path not in SESSION_PATHS and clock_warning(request):
            raise ClockBehind(request.app[NODE_KEY].clock.refusal())
    try:
        return await handler(request)
    except Refused as exc:
        return problem(request, exc.status, exc.key)


def cookie_flags() -> dict[str, Any]:
    # Secure cannot be set: the page is plain HTTP on loopback (decision 0003)
    return {"httponly": True, "samesite": "Strict", "path": "/"}


def page(
    request: web.Request, template: str, http_status: int = 200, **context: Any
) -> web.Response:
    """Render `template` with the session, the catalogue, the form token and the clock
    warning (a new pre-login token gets its cookie)."""
    text = request[TEXT]
    token = csrf_of(request)
    new_token = "" if token else secrets.token_urlsafe(32)
    context.setdefault("clock_warning", clock_warning(request))
    body = (
        request.app[WEB_KEY]
        .templates.get_template(template)
        .render(
            t=text,
            lang=text.lang,
            session=request.get(SESSION),
            csrf=token or new_token,
            path=request.path,
            **context,
        )
    )
    response = web.Response(
        text=body, status=http_status, content_type="text/html", charset="utf-8"
    )
    response.headers.update(SECURITY_HEADERS)
    if new_token:
        response.set_cookie(PRE_COOKIE, new_token, **cookie_flags())
    return response


def clock_text(request: web.Request, key: str) -> str:
    """The catalogue message `key` with the device clock's time and the floor's."""
    text = request[TEXT]
    clock = request.app[NODE_KEY].clock
    return text(key, now=text.moment(iso(clock.system())), floor=text.moment(iso(clock.floor_ms)))


def clock_warning(request: web.Request) -> str:
    """What every page says while the clock is behind the floor ("" when it is not)."""
    if request.app[NODE_KEY].clock.behind_ms() <= TOLERANCE_MS:
        return ""
    return clock_text(request, "clock.behind")


def problem(request: web.Request, status: int, key: str, **values: Any) -> web.Response:
    """A page saying plainly why the request was refused."""
    return page(request, "error.html", http_status=status, message=request[TEXT](key, **values))


def operator_of(request: web.Request, *roles: str) -> Session:
    """The request's session; Refused (403) unless its role is one of `roles` (any if none)."""
    session = request[SESSION]
    if roles and session.operator.role not in roles:
        log.warning(
            "page refused path=%s reason=role role=%s user=%s",
            request.path,
            session.operator.role,
            session.operator.username,
        )
        raise Refused(403, "error.forbidden")
    return session


async def login_form(request: web.Request) -> web.Response:
    if request.get(SESSION):
        raise web.HTTPSeeOther("/")
    return await _login_page(request)


async def _login_page(
    request: web.Request, status: int = 200, message: str = "", username: str = ""
) -> web.Response:
    operators = await request.app[NODE_KEY].db.fetchone("SELECT count(*) FROM operators")
    return page(
        request,
        "login.html",
        http_status=status,
        message=message,
        username=username if len(username) <= MAX_USERNAME else "",  # never echo a huge one
        max_username=MAX_USERNAME,
        max_password=MAX_PASSWORD,
        first_start=not (operators and operators[0]),
    )


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    username = str(form.get("username", "")).strip().lower()
    password = str(form.get("password", ""))
    text = request[TEXT]
    try:
        made = await request.app[WEB_KEY].sessions.login(username, password, request.remote)
    except Locked as exc:
        return await _login_page(request, 429, text("login.locked", minutes=exc.minutes), username)
    if made is None:
        return await _login_page(request, 401, text("login.failed"), username)
    response = web.HTTPSeeOther("/")
    response.set_cookie(SESSION_COOKIE, made[0], **cookie_flags())
    raise response


async def logout(request: web.Request) -> web.Response:
    await request.app[WEB_KEY].sessions.end(request.cookies.get(SESSION_COOKIE, ""))
    response = web.HTTPSeeOther("/masuk")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def set_language(request: web.Request) -> web.Response:
    form = await request.post()
    lang = str(form.get("lang", ""))
    back = str(form.get("back", "/"))
    response = web.HTTPSeeOther(back if back.startswith("/") and not back.startswith("//") else "/")
    if lang in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, **cookie_flags())
    raise response


def add_web_routes(app: web.Application) -> None:
    app[WEB_KEY] = make_web(app)
    app.router.add_get("/masuk", login_form)
    app.router.add_post("/masuk", login)
    app.router.add_post("/keluar", logout)
    app.router.add_post("/bahasa", set_language)
    app.router.add_static("/static/", HERE / "static", append_version=False)
