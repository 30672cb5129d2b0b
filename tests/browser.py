"""Test helpers for the operator page in a real browser: Debian's Chromium driven by
Playwright (never its own browser download), logins, form tokens and screenshots.

`launch(playwright)` starts /usr/bin/chromium headless with a fresh profile and nothing
that phones home; `skip_reason()` says why a machine cannot (no Chromium, no Playwright).
Screenshots go to test-artifacts/screenshots/ (gitignored) for a reviewer to look at.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
PASSWORD = "kata-sandi-rahasia"
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 360, "height": 740}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def skip_reason() -> str | None:
    """Why browser tests cannot run here, or None."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "browser tests need the playwright package (pip install -e '.[test]')"
    if shutil.which(CHROMIUM) is None:
        return f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


async def launch(playwright: Any, executable: str = CHROMIUM) -> Any:
    """Chromium with a fresh temporary profile (Playwright makes one per launch)."""
    return await playwright.chromium.launch(
        executable_path=executable, args=CHROMIUM_ARGS, headless=True
    )


async def log_in(
    browser: Any,
    base: str,
    username: str,
    viewport: dict | None = None,
    on_request: Callable[[Any], None] | None = None,
) -> Any:
    """A new browser context (own cookies) logged in as `username`; returns its page.

    `on_request` sees every request of the context, from the login page on.
    """
    context = await browser.new_context(viewport=viewport or LAPTOP, locale="id-ID")
    if on_request is not None:
        context.on("request", on_request)
    page = await context.new_page()
    await page.goto(f"{base}/masuk")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("form[action='/masuk'] button[type=submit]")
    await page.wait_for_url(f"{base}/")
    return page


async def csrf_of(page: Any) -> str:
    """The form token of the page's session (read from any form on the page)."""
    return await page.locator("input[name=csrf]").first.get_attribute("value")


async def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def record_id_in(url: str) -> str:
    found = re.search(r"/keluarga/([0-9a-f-]{36})", url)
    assert found, url
    return found.group(1)
