"""The operator page works with no network at all and never asks anything of the internet.

The node and Chromium run inside a network namespace whose only working interface is
loopback (tests/netns.py, its one link taken down); every request the browser makes while
an operator logs in and opens each page must go to the node's own origin, and the page's
style sheet must have loaded from there.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from browser import CHROMIUM, launch, log_in, skip_reason
from conftest import make_token
from netns import Lan, lan_fixture  # noqa: F401  (provides the `lan` fixture)

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

PAGES = ("/", "/keluarga", "/keluarga/baru", "/usulan", "/konflik", "/admin")


def chromium_in(namespace: str, folder: Path) -> Path:
    """A launcher that runs Debian's Chromium inside `namespace` (Playwright's pipe to the
    browser is inherited, so it drives the browser as usual)."""
    script = folder / "chromium-in-netns"
    script.write_text(f'#!/bin/sh\nexec ip netns exec {namespace} {CHROMIUM} "$@"\n')
    script.chmod(0o755)
    return script


async def test_pages_load_only_from_the_node_itself_with_the_network_cut(
    lan: Callable[[int], Lan], tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    net = lan(1)
    net.link_down(0)
    routes = subprocess.run(
        ["ip", "-n", net.hosts[0].namespace, "route", "show"], capture_output=True, text=True
    )
    assert routes.stdout.strip() == "", f"the namespace still has routes: {routes.stdout}"
    data_dir = tmp_path / "node"
    await make_token(data_dir, "adi", "admin")
    node = await net.spawn(
        0,
        [sys.executable, "-m", "simpul.node", "--data-dir", str(data_dir), "node",
         "--listen", "127.0.0.1:0"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "SIMPUL_DISCOVERY": "off"},
    )  # fmt: skip
    assert node.stdout is not None
    line = (await asyncio.wait_for(node.stdout.readline(), timeout=60)).decode()
    found = re.search(r"(http://127\.0\.0\.1:\d+)", line)
    assert found, line
    origin = found.group(1)
    requested: list[str] = []
    async with async_playwright() as playwright:
        browser = await launch(playwright, str(chromium_in(net.hosts[0].namespace, tmp_path)))
        try:
            page = await log_in(
                browser, origin, "adi", on_request=lambda r: requested.append(r.url)
            )
            for path in PAGES:
                response = await page.goto(origin + path)
                assert response.status == 200, path
                colour = await page.evaluate(
                    "getComputedStyle(document.querySelector('header.top')).backgroundColor"
                )
                assert colour == "rgb(11, 61, 145)", "the style sheet did not load"
        finally:
            await browser.close()
    assert any(url.endswith("/static/simpul.css") for url in requested)
    strangers = [url for url in requested if not url.startswith(origin + "/")]
    assert strangers == [], f"requests left the node: {strangers}"
