"""Who may do what on the operator page and the JSON API, over real HTTP on loopback.

Every route refuses a request without a session or token; every form refuses a post
without its CSRF token; logins lock after repeated failures; roles are checked on the
server for pages and API writes; the admin enrols a device by its code and revokes it.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from conftest import make_token
from sync_peers import open_peers, sync_both_ways
from test_conflicts import concurrent
from test_network_cli import PASSPHRASE, create_network

from simpul.crypto.enrollment import EnrollmentRequest, pairing_code
from simpul.crypto.exchange_key import ExchangeKey
from simpul.crypto.node_key import NodeKey
from simpul.node.runtime import Node, open_node
from simpul.node.server import build_app
from simpul.node.usb_drive import SIMPUL_DIR
from simpul.node.usb_watcher import UsbWatcher
from simpul.node.web_sessions import LOCK_AFTER
from simpul.node.web_text import CATALOGUE, Text
from simpul.sync.household import ValidationError, validate_household
from simpul.sync.operators import Operators

PASSWORD = "kata-sandi-rahasia"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
# Routes that are not pages keep their own documented rules: no secret behind them
OPEN_ROUTES = {
    "/healthz",  # liveness, no data
    "/metrics",  # counts only; loopback or a bearer token (node/metrics.py)
    "/enroll/requests",  # a signed public request; admitted only with the code (enroll_api)
    "/enroll/grants/{node_id}",  # a grant is encrypted to the device that asked
    "/masuk",  # the login form
    "/bahasa",  # sets the language cookie, with the pre-login form token
}


@dataclass
class Site:
    node: Node
    base: str
    tokens: dict[str, str]
    record: dict[str, Any]

    def browser(self) -> aiohttp.ClientSession:
        """A client with its own cookie jar (cookies of 127.0.0.1 accepted)."""
        return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def log_in(self, http: aiohttp.ClientSession, username: str) -> str:
        """Log in; the session's form token."""
        async with http.get(f"{self.base}/masuk") as response:
            token = CSRF.search(await response.text()).group(1)
        form = {"csrf": token, "username": username, "password": PASSWORD}
        async with http.post(f"{self.base}/masuk", data=form) as response:
            assert response.status == 200 and response.url.path == "/", await response.text()
            return CSRF.search(await response.text()).group(1)


@pytest.fixture
async def site(tmp_path: Path, households_jsonl: list) -> AsyncIterator[Site]:
    data_dir = tmp_path / "node"
    tokens = {
        role: await make_token(data_dir, name, role)
        for name, role in (("ani", "operator"), ("vera", "verifier"), ("adi", "admin"))
    }
    async with open_node(data_dir) as node:
        household = next(h for h in households_jsonl if h["kode_wilayah"].startswith("1709"))
        record = await node.records.create({**household, "status_usulan": "draft"}, "ani")
        server = TestServer(build_app(node), host="127.0.0.1")
        await server.start_server()
        yield Site(node, str(server.make_url("")).rstrip("/"), tokens, record)
        await server.close()


def concrete(path: str, record_id: str) -> str:
    return path.replace("{id}", record_id).replace("{node_id}", "0" * 32)


async def test_every_route_refuses_a_request_without_session_or_token(site: Site) -> None:
    app = build_app(site.node)
    checked = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        if route.method == "HEAD" or path in OPEN_ROUTES or path == "/static":
            continue
        url = site.base + concrete(path, site.record["id"])
        async with (
            site.browser() as http,
            http.request(route.method, url, allow_redirects=False) as response,
        ):
            body = await response.text()
        if path.startswith("/api/"):
            assert response.status == 401, (route.method, path)
        elif route.method == "GET":
            assert (response.status, response.headers.get("Location")) == (303, "/masuk"), path
        else:
            assert response.status == 401, (route.method, path)
        assert site.record["no_kk"] not in body
        checked.append(f"{route.method} {path}")
    pages = {"GET /", "GET /keluarga", "GET /keluarga/{id}", "POST /keluarga/{id}/usulan"}
    assert pages <= set(checked) and len(checked) >= 20, checked
    async with site.browser() as http:  # a made-up session cookie is no session
        http.cookie_jar.update_cookies({"simpul_session": "x" * 43})
        async with http.get(f"{site.base}/keluarga", allow_redirects=False) as response:
            assert response.status == 303


async def test_forms_without_their_csrf_token_are_refused(site: Site) -> None:
    async with site.browser() as http:
        async with http.post(
            f"{site.base}/masuk", data={"username": "ani", "password": PASSWORD}
        ) as response:
            assert response.status == 403  # even the login form carries a token
        token = await site.log_in(http, "ani")
        before = (await site.node.records.counts())["records"]
        form = {"kode_wilayah": "1709042001", "no_kk": "1" * 16, "anggota_n": "0"}
        for sent in ({}, {"csrf": "salah"}):
            async with http.post(f"{site.base}/keluarga/baru", data=form | sent) as response:
                assert response.status == 403
                assert "Formulir kedaluwarsa" in await response.text()
        url = f"{site.base}/keluarga/{site.record['id']}/usulan"
        async with http.post(url, data={"ke": "diusulkan"}) as response:
            assert response.status == 403
        assert (await site.node.records.counts())["records"] == before
        assert (await site.node.records.get(site.record["id"]))["status_usulan"] == "draft"
        async with http.post(url, data={"ke": "diusulkan", "csrf": token}) as response:
            assert response.status == 200  # the same step with its token works
        assert (await site.node.records.get(site.record["id"]))["status_usulan"] == "diusulkan"


async def test_session_cookie_is_httponly_strict_and_ends_at_logout(site: Site) -> None:
    async with site.browser() as http:
        async with http.get(f"{site.base}/masuk") as response:
            token = CSRF.search(await response.text()).group(1)
        form = {"csrf": token, "username": "ani", "password": PASSWORD}
        async with http.post(f"{site.base}/masuk", data=form, allow_redirects=False) as response:
            assert response.status == 303
            cookie = response.cookies["simpul_session"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        async with http.get(f"{site.base}/") as response:
            token = CSRF.search(await response.text()).group(1)
        async with http.post(f"{site.base}/keluar", data={"csrf": token}) as response:
            assert response.url.path == "/masuk"
        http.cookie_jar.update_cookies({"simpul_session": cookie.value})  # replayed
        async with http.get(f"{site.base}/", allow_redirects=False) as response:
            assert response.status == 303


async def test_repeated_failed_logins_lock_the_account(site: Site) -> None:
    async with site.browser() as http:
        async with http.get(f"{site.base}/masuk") as response:
            token = CSRF.search(await response.text()).group(1)

        async def attempt(username: str, password: str) -> int:
            form = {"csrf": token, "username": username, "password": password}
            async with http.post(f"{site.base}/masuk", data=form) as response:
                return response.status

        assert [await attempt("ani", "salah-salah") for _ in range(LOCK_AFTER)] == [401] * 5
        assert await attempt("ani", PASSWORD) == 429  # locked: even the right password
        assert await attempt("vera", PASSWORD) == 200  # another account is not


async def test_pages_check_roles_on_the_server(site: Site) -> None:
    async with site.browser() as http:
        token = await site.log_in(http, "ani")
        async with http.get(f"{site.base}/admin") as response:
            assert response.status == 403
        form = {"csrf": token, "username": "nakal", "role": "admin", "password": PASSWORD}
        async with http.post(f"{site.base}/admin/operator", data=form) as response:
            assert response.status == 403
        assert await site.node.operators.get("nakal") is None
        resolve = {"csrf": token, "field": "desil", "pilih": "0"}
        async with http.post(f"{site.base}/konflik/{site.record['id']}", data=resolve) as r:
            assert r.status == 403
        move = {"csrf": token, "ke": "disahkan"}
        async with http.post(f"{site.base}/keluarga/{site.record['id']}/usulan", data=move) as r:
            assert r.status == 403
        assert (await site.node.records.get(site.record["id"]))["status_usulan"] == "draft"


async def test_json_api_writes_check_roles(site: Site, households_jsonl: list) -> None:
    household = next(
        h
        for h in households_jsonl
        if h["kode_wilayah"].startswith("1709") and h["no_kk"] != site.record["no_kk"]
    )

    async def call(role: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {site.tokens[role]}"}
        url = f"{site.base}/api/v1{path}"
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, url, json=body, headers=headers) as response,
        ):
            return response.status, await response.json()

    approved = {**household, "status_usulan": "disahkan"}
    assert (await call("operator", "POST", "/records", approved))[0] == 403
    draft = {**approved, "status_usulan": "draft"}
    status, created = await call("operator", "POST", "/records", draft)
    assert status == 201
    path = f"/records/{created['id']}"
    assert (await call("operator", "PATCH", path, {"status_usulan": "disahkan"}))[0] == 403
    assert (await call("operator", "PATCH", path, {"status_usulan": "diusulkan"}))[0] == 200
    status, body = await call("verifier", "PATCH", path, {"status_usulan": "dikembalikan"})
    assert status == 422 and body["fields"][0]["field"] == "catatan_usulan"
    returned = {"status_usulan": "dikembalikan", "catatan_usulan": "KK buram"}
    status, body = await call("verifier", "PATCH", path, returned)
    assert status == 200 and body["catatan_usulan"] == "KK buram"
    assert (await call("operator", "DELETE", path))[0] == 403
    assert (await call("admin", "DELETE", path))[0] == 200


async def test_admin_enrols_a_device_by_its_code_and_revokes_it(site: Site, tmp_path: Path) -> None:
    create_network(site.node.data_dir)  # the running node reads its membership per request
    device = NodeKey.generate()
    request = EnrollmentRequest.create(device, ExchangeKey.generate(), "laptop-desa")
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{site.base}/enroll/requests", data=request.to_bytes()) as response,
    ):
        assert response.status == 202
    async with site.browser() as http:
        token = await site.log_in(http, "adi")
        async with http.get(f"{site.base}/admin") as response:
            assert "laptop-desa" in await response.text()
        admit = {"csrf": token, "scope": "1709042001", "passphrase": PASSPHRASE.strip()}
        wrong = f"{(int(pairing_code(request)) + 1) % 1_000_000:06d}"
        url = f"{site.base}/admin/perangkat/terima"
        async with http.post(url, data=admit | {"code": wrong}) as response:
            assert response.status == 422 and "no waiting device" in await response.text()
        admit["code"] = pairing_code(request)
        async with http.post(url, data=admit) as response:
            assert response.status == 200 and "diterima" in await response.text()
        async with http.get(f"{site.base}/enroll/grants/{device.node_id_hex}") as response:
            assert response.status == 200
        revoke = {"csrf": token, "node_id": device.node_id_hex, "reason": "hilang"}
        bad = revoke | {"passphrase": "bukan"}
        async with http.post(f"{site.base}/admin/perangkat/cabut", data=bad) as response:
            assert response.status == 422
        good = revoke | {"passphrase": PASSPHRASE.strip()}
        async with http.post(f"{site.base}/admin/perangkat/cabut", data=good) as response:
            assert response.status == 200 and "dicabut" in await response.text()


def test_catalogue_has_every_text_in_both_languages_and_indonesian_dates() -> None:
    assert all(len(texts) == 2 and all(t.strip() for t in texts) for texts in CATALOGUE.values())
    indonesian, english = Text("id"), Text("en")
    assert indonesian.date("1988-03-21") == "21 Maret 1988"
    assert english.date("1988-03-21") == "21 March 1988"
    assert Text("xx").lang == "id"
    assert indonesian.moment("1988-08-17T03:00:00Z").startswith(("17 Agustus 1988", "16 Agustus"))


def test_validation_messages_are_translated(households_jsonl: list) -> None:
    household = households_jsonl[0]
    member = {**household["anggota"][0], "nik": "123"}
    broken = {**household, "no_kk": "12", "rt": "", "anggota": [member]}
    with pytest.raises(ValidationError) as caught:
        validate_household(broken)
    text = Text("id")
    translated = {e.field: text.validation(e.message) for e in caught.value.errors}
    assert translated["no_kk"] == "harus tepat 16 angka, tertulis '12'"
    assert translated["anggota[0].nik"].startswith("harus tepat 16 angka")
    assert all(
        m != e.message for m, e in zip(translated.values(), caught.value.errors, strict=True)
    )


def form_fields(page: str) -> list[tuple[str, str]]:
    """What a browser would send for the page's household form (as shown, unchanged)."""
    page = page[page.index('<form method="post" action="/keluarga/') :]
    page = page[: page.index("</form>")]
    sent = []
    for tag in re.findall(r"<input\b[^>]*>", page):
        attributes = dict(re.findall(r'([\w-]+)="([^"]*)"', tag))
        kind = attributes.get("type", "text")
        if "name" not in attributes or (kind in ("checkbox", "radio") and " checked" not in tag):
            continue
        sent.append((attributes["name"], html.unescape(attributes.get("value", ""))))
    for name, options in re.findall(r'<select[^>]* name="([^"]+)"[^>]*>(.*?)</select>', page, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected>', options)
        sent.append((name, html.unescape(chosen.group(1)) if chosen else ""))
    return sent


async def test_saving_the_form_keeps_what_others_changed_meanwhile(site: Site) -> None:
    record_id = site.record["id"]
    async with site.browser() as http:
        await site.log_in(http, "ani")
        async with http.get(f"{site.base}/keluarga/{record_id}/ubah") as response:
            form_page = await response.text()
        # someone else (another tab, or a synced edit) changes the desil meanwhile
        other = 10 if site.record["desil"] != 10 else 9
        await site.node.records.update(record_id, lambda h: {**h, "desil": other}, "vera")
        form = [(name, value) for name, value in form_fields(form_page) if name != "alamat"] + [
            ("alamat", "Jl. Baru 1"),
            ("aksi", "simpan"),
        ]
        async with http.post(f"{site.base}/keluarga/{record_id}/ubah", data=form) as response:
            body = await response.text()
            assert response.status == 200 and "Tersimpan" in body, re.findall(
                r"class=\"error\"[^>]*>([^<]*)", body
            )
    saved = await site.node.records.get(record_id)
    assert (saved["alamat"], saved["desil"]) == ("Jl. Baru 1", other)
    assert saved["anggota"] == site.record["anggota"]


async def test_first_start_login_page_says_how_to_make_the_first_admin(tmp_path: Path) -> None:
    async with open_node(tmp_path / "fresh") as node:
        server = TestServer(build_app(node), host="127.0.0.1")
        await server.start_server()
        async with aiohttp.ClientSession() as http, http.get(server.make_url("/masuk")) as r:
            assert "simpul operator add NAMA --role admin" in await r.text()
        await server.close()


def relative_luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_text_colours_meet_wcag_aa_contrast_on_their_backgrounds() -> None:
    css = (Path(__file__).resolve().parents[1] / "node" / "static" / "simpul.css").read_text()
    colours = dict(re.findall(r"--([a-z-]+): (#[0-9a-f]{6})", css))
    pairs = [
        ("ink", "bg"), ("ink", "panel"), ("muted", "bg"), ("muted", "panel"), ("brand", "bg"),
        ("brand", "panel"), ("brand-ink", "brand"), ("bad", "bad-bg"), ("bad", "panel"),
        ("good", "good-bg"), ("warn", "bg"), ("warn", "panel"),
    ]  # fmt: skip
    for text, background in pairs:
        lighter, darker = sorted(
            (relative_luminance(colours[text]), relative_luminance(colours[background])),
            reverse=True,
        )
        ratio = (lighter + 0.05) / (darker + 0.05)
        assert ratio >= 4.5, f"{text} on {background}: {ratio:.2f}"


async def test_a_typed_correction_settles_a_conflict_and_a_bad_one_says_why(
    tmp_path: Path, households_jsonl: list
) -> None:
    async with open_peers(tmp_path, 2) as (a, b):
        record = await a.records.create(households_jsonl[3], "ani")
        await sync_both_ways(a, b)
        await concurrent(a, b, record["id"], {"desil": 2}, {"desil": 9})
        operators = Operators(a.db)
        await operators.add("vera", "verifier", PASSWORD)
        node = Node(tmp_path / "node0", a.key, a.db, a.records, operators)
        server = TestServer(build_app(node), host="127.0.0.1")
        await server.start_server()
        site = Site(node, str(server.make_url("")).rstrip("/"), {}, record)
        async with site.browser() as http:
            token = await site.log_in(http, "vera")
            async with http.get(f"{site.base}/konflik") as response:
                shown = await response.text()
                assert "oleh ani" in shown and "oleh budi" in shown
            url = f"{site.base}/konflik/{record['id']}"
            form = {"csrf": token, "field": "desil"}
            async with http.post(url, data=form | {"nilai_lain": "sebelas"}) as response:
                assert response.status == 422
                assert "harus angka bulat 1 sampai 10" in await response.text()
            async with http.post(url, data=form) as response:  # neither picked nor typed
                assert response.status == 422
            async with http.post(url, data=form | {"nilai_lain": "5"}) as response:
                settled_page = await response.text()
                assert response.url.path == "/konflik" and "Konflik selesai" in settled_page
                assert record["no_kk"] not in settled_page  # no longer listed
        await server.close()
        await sync_both_ways(a, b)
        for peer in (a, b):
            settled = await peer.records.get(record["id"])
            assert (settled["desil"], settled["_meta"]["conflicts"]) == (5, [])


async def test_admin_takes_a_usb_drive_into_use(tmp_path: Path) -> None:
    media = tmp_path / "media"
    (media / "sdb1").mkdir(parents=True)
    await make_token(tmp_path / "node", "adi", "admin")
    async with open_node(tmp_path / "node") as node:
        watcher = UsbWatcher(node, [media], poll_seconds=3600)
        server = TestServer(build_app(node, watcher), host="127.0.0.1")
        await server.start_server()
        site = Site(node, str(server.make_url("")).rstrip("/"), {}, {})
        async with site.browser() as http:
            token = await site.log_in(http, "adi")
            outside = {"csrf": token, "path": str(tmp_path)}
            async with http.post(f"{site.base}/admin/usb", data=outside) as response:
                assert response.status == 422 and "not a drive folder" in await response.text()
            drive = {"csrf": token, "path": str(media / "sdb1")}
            async with http.post(f"{site.base}/admin/usb", data=drive) as response:
                assert response.status == 200 and "sinkron berjalan" in await response.text()
        assert (media / "sdb1" / SIMPUL_DIR).is_dir()
        await server.close()
