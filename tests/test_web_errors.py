"""What the operator sees when a page request fails: the error page in Bahasa Indonesia (or
English), never JSON, a traceback or aiohttp's plain text; the API keeps answering JSON.

A node process under a 1970 clock (libfaketime) shows a warning on every page and answers a
household form with a 503 page saying what is wrong, that nothing was saved and how to fix
it (Chromium). Unknown addresses, wrong methods, bodies over the limit and an unexpected
failure (a table dropped under the running node) and a full disk (a real small tmpfs) are
checked over plain HTTP.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from browser import csrf_of, launch, log_in, screenshot, skip_reason
from conftest import NodeProcess, make_token, start_node_process
from test_doctor import IN_1970, needs_faketime, node_dir, records  # noqa: F401 (a fixture)
from test_web_access import Site, form_fields, site  # noqa: F401 (a fixture)
from usb_nodes import small_drive

from simpul.node.runtime import open_node
from simpul.node.server import build_app

TOO_LARGE = 2 * 1024 * 1024  # the node takes at most 1 MiB
CHUNK = 64 * 1024


def checkpoints(data_dir: Path) -> int:
    with closing(sqlite3.connect(data_dir / "simpul.db")) as conn:
        return conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]


def assert_error_page(
    response: aiohttp.ClientResponse, body: str, status: int, *texts: str
) -> None:
    """An operator's error page: `status`, HTML with its alert and every one of `texts`."""
    assert (response.status, response.content_type) == (status, "text/html"), body
    assert '<p class="alert" role="alert">' in body and "Traceback" not in body
    for text in texts:
        assert text in body, body


@needs_faketime
@pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
async def test_a_form_posted_with_the_clock_behind_gets_the_clock_page_and_saves_nothing(
    node_dir: Path,  # noqa: F811
    node_processes: list[NodeProcess],
) -> None:
    from playwright.async_api import async_playwright

    token = await make_token(node_dir, "ani", "operator")
    node = await start_node_process(node_dir, env=IN_1970)
    node_processes.append(node)
    api = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=api) as http:
        async with http.get(f"{node.url}/api/v1/records?limit=1") as answer:
            before = (await answer.json())["items"][0]
        edit = f"{node.url}/keluarga/{before['id']}/ubah"
        stored = checkpoints(node_dir)
        async with async_playwright() as playwright:
            browser = await launch(playwright)
            page = await log_in(browser, node.url, "ani")
            banner = page.get_by_role("alert")
            assert "Jam perangkat ini tertinggal" in await banner.inner_text()
            assert "1970" in await banner.inner_text()
            await page.goto(edit)
            assert await page.get_by_role("alert").is_visible()
            await page.fill("#f-alamat", "Jl. Tidak Tersimpan 1")
            async with page.expect_response(lambda r: r.request.method == "POST") as sent:
                await page.click("button.primary[name=aksi][value=simpan]")
            assert (await sent.value).status == 503
            said = await page.get_by_role("alert").inner_text()
            assert said.startswith("Jam perangkat mundur") and "Tidak ada yang disimpan" in said
            assert "simpul doctor" in await page.locator("main").inner_text()
            await screenshot(page, "clock-behind-refused")
            await page.click("button[lang=en]")  # the language switch still works
            await page.goto(edit)
            assert "clock is behind" in await page.get_by_role("alert").inner_text()
            form = {"csrf": await csrf_of(page), "alamat": "Jl. Tidak Tersimpan 2"}
            refused = await page.request.post(edit, form=form)
            assert refused.status == 503 and "Nothing was saved" in await refused.text()
            await browser.close()
        async with http.post(f"{node.url}/api/v1/records", json={}) as answer:
            assert answer.status == 503 and (await answer.json())["hint"] == "simpul doctor"
        async with http.get(f"{node.url}/api/v1/records/{before['id']}") as answer:
            assert await answer.json() == before
    assert checkpoints(node_dir) == stored and records(node_dir) == 20


async def test_unknown_address_and_wrong_method_get_the_page_in_the_operators_language(
    site: Site,  # noqa: F811
) -> None:
    async with site.browser() as http:
        await site.log_in(http, "ani")
        async with http.get(f"{site.base}/tidak-ada") as response:
            body = await response.text()
            assert_error_page(response, body, 404, "Halaman ini tidak ada", '<html lang="id">')
        async with http.get(f"{site.base}/keluar") as response:  # a form's address, by GET
            assert response.headers["Allow"] == "POST"
            assert_error_page(response, await response.text(), 405, "tidak bisa dibuka")
        http.cookie_jar.update_cookies({"simpul_lang": "en"})
        async with http.get(f"{site.base}/keluarga/baru/lagi") as response:
            assert_error_page(response, await response.text(), 404, "There is no such page")


async def test_a_body_over_the_limit_gets_the_page_and_writes_nothing(site: Site) -> None:  # noqa: F811
    stored = checkpoints(site.node.data_dir)
    async with site.browser() as http:
        csrf = await site.log_in(http, "ani")
        form = {"csrf": csrf, "alamat": "x" * TOO_LARGE}
        async with http.post(f"{site.base}/keluarga/baru", data=form) as response:
            assert_error_page(response, await response.text(), 413, "terlalu besar")
    assert checkpoints(site.node.data_dir) == stored


async def test_an_unexpected_failure_is_logged_and_shown_as_a_page_not_a_traceback(
    site: Site,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with site.browser() as http:
        await site.log_in(http, "ani")
        with closing(sqlite3.connect(site.node.data_dir / "simpul.db")) as conn:
            conn.execute("DROP TABLE peers")  # the dashboard and the status read it
            conn.commit()
        with caplog.at_level(logging.ERROR, logger="simpul.node.http_errors"):
            async with http.get(f"{site.base}/") as response:
                body = await response.text()
        assert_error_page(response, body, 500, "Terjadi kesalahan")
        assert "peers" not in body and "OperationalError" not in body
    logged = [r.getMessage() for r in caplog.records]
    assert "request failed path=/ method=GET error=OperationalError" in logged
    headers = {"Authorization": f"Bearer {site.tokens['operator']}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(f"{site.base}/api/v1/status") as response,
    ):
        assert response.status == 500 and "error" in await response.json()


async def test_api_failures_stay_json(site: Site) -> None:  # noqa: F811
    headers = {"Authorization": f"Bearer {site.tokens['operator']}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{site.base}/api/v1/tidak-ada") as response:
            assert response.status == 404
            assert await response.json() == {"error": "not found"}
        async with http.delete(f"{site.base}/api/v1/status") as response:
            assert response.status == 405 and response.headers["Allow"] == "GET,HEAD"
            assert (await response.json())["error"] == "method not allowed"
        big = {"alamat": "x" * TOO_LARGE}
        async with http.post(f"{site.base}/api/v1/records", json=big) as response:
            assert response.status == 413 and "error" in await response.json()
        async with http.get(f"{site.base}/api/v1/records/{site.record['id']}x") as response:
            assert response.status == 404  # the API's own JSON answers are left as they are
            assert await response.json() == {"error": "no such record"}


def fill(disk: Path, most: int) -> Path:
    """A file taking every byte left on `disk` (at most `most` bytes are tried)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for _ in range(most // CHUNK):
            try:
                out.write(b"\0" * CHUNK)
            except OSError:
                break
    return filler


async def test_a_form_posted_onto_a_full_disk_gets_the_page_and_loses_nothing(
    tmp_path: Path, households_jsonl: list
) -> None:
    with small_drive(tmp_path / "small", "8m") as disk:
        data_dir = disk / "node"
        token = await make_token(data_dir, "ani", "operator")
        async with open_node(data_dir) as node:
            record = await node.records.create(households_jsonl[0], "ani")
            server = TestServer(build_app(node), host="127.0.0.1")
            await server.start_server()
            site = Site(node, str(server.make_url("")).rstrip("/"), {"operator": token}, record)
            edit = f"{site.base}/keluarga/{record['id']}/ubah"
            async with site.browser() as http:
                await site.log_in(http, "ani")
                async with http.get(edit) as response:
                    shown = form_fields(await response.text())
                form = [(k, v) for k, v in shown if k != "alamat"] + [
                    ("alamat", "Jl. Penuh 1"),
                    ("aksi", "simpan"),
                ]
                filler = fill(disk, 8 * 1024 * 1024)
                async with http.post(edit, data=form) as response:
                    body = await response.text()
                    assert_error_page(response, body, 507, "Penyimpanan perangkat ini penuh")
                assert await node.records.get(record["id"]) == record
                filler.unlink()
                async with http.post(edit, data=form) as response:
                    assert response.status == 200 and "Tersimpan" in await response.text()
            await server.close()
            assert (await node.records.get(record["id"]))["alamat"] == "Jl. Penuh 1"
