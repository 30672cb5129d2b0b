"""House photos on the operator page, in Debian's Chromium, on two nodes that sync over the
LAN: an operator uploads a photo from the household page (the camera/file input, no
JavaScript), sees its thumbnail there, is told plainly when a file is not a photo, and
after sync the thumbnail shows on the other node's page too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from browser import PHONE, launch, log_in, screenshot, skip_reason
from conftest import NodeProcess, make_token, simpul_cli, start_node_process
from photo_files import phone_photo
from test_network_cli import create_network, enrol_by_file
from test_web_browser import household

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

SYNC_PERIOD = "2"
WAIT_SECONDS = 60


async def thumbnails_shown(page: Any) -> int:
    """How many photo thumbnails on the page have loaded as real images."""
    return await page.evaluate(
        "() => [...document.querySelectorAll('#foto img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length"
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def nodes(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[NodeProcess, NodeProcess, str, Any]]:
    """Node A (network root) and B, synced as peers; an API token on A; one browser."""
    from playwright.async_api import async_playwright

    tmp = tmp_path_factory.mktemp("photos")
    a_dir, b_dir = tmp / "admin", tmp / "desa"
    create_network(a_dir)
    enrol_by_file(a_dir, b_dir, tmp)
    token = await make_token(a_dir, "ani", "operator")
    await make_token(b_dir, "budi", "operator")
    a = await start_node_process(a_dir, "--sync-period", SYNC_PERIOD)
    b = await start_node_process(b_dir, "--sync-period", SYNC_PERIOD)
    for data_dir, other in ((a_dir, b), (b_dir, a)):
        assert simpul_cli(data_dir, "peer", "add", f"127.0.0.1:{other.sync_port}").returncode == 0
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            yield a, b, token, browser
        finally:
            await browser.close()
            for node in (a, b):
                if node.process.returncode is None:
                    node.kill()
                await node.process.wait()


async def test_upload_a_photo_see_it_here_and_on_the_other_node(
    nodes: tuple[NodeProcess, NodeProcess, str, Any], tmp_path: Path
) -> None:
    a, b, token, browser = nodes
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{a.url}/api/v1/records",
            json=household(4242),
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        assert response.status == 201
        record_id = (await response.json())["id"]
    photo, not_photo = tmp_path / "rumah.jpg", tmp_path / "catatan.txt"
    photo.write_bytes(phone_photo(42))
    not_photo.write_text("bukan gambar")

    page = await log_in(browser, a.url, "ani", viewport=PHONE)
    await page.goto(f"{a.url}/keluarga/{record_id}")
    assert await page.get_attribute("#foto-berkas", "capture") == "environment"
    await page.select_option("#foto-jenis", "dalam")
    await page.set_input_files("#foto-berkas", str(not_photo))
    await page.click("#foto button.primary")
    assert "bukan foto" in await page.locator("p.alert").inner_text()
    await page.goto(f"{a.url}/keluarga/{record_id}")
    too_big = {"name": "besar.jpg", "mimeType": "image/jpeg", "buffer": b"\xff" * (26 << 20)}
    await page.set_input_files("#foto-berkas", too_big)
    await page.click("#foto button.primary")
    assert "terlalu besar" in await page.locator("p.alert").inner_text()
    await page.goto(f"{a.url}/keluarga/{record_id}")
    assert await page.locator("#foto li.photo").count() == 0

    await page.select_option("#foto-jenis", "depan")
    await page.set_input_files("#foto-berkas", str(photo))
    await page.click("#foto button.primary")
    await page.wait_for_url(f"{a.url}/keluarga/{record_id}#foto")
    await page.wait_for_function("() => document.querySelector('#foto img')?.naturalWidth > 0")
    assert await thumbnails_shown(page) == 1
    assert "Depan rumah" in await page.locator("#foto li.photo").inner_text()
    await screenshot(page, "photo-household-a-phone")

    other = await log_in(browser, b.url, "budi")
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            await other.goto(f"{b.url}/keluarga/{record_id}")
            if await other.locator("#foto img").count() and await thumbnails_shown(other):
                break
            await asyncio.sleep(0.5)
    await screenshot(other, "photo-household-b")
