"""A neighbour on the office WiFi against the login form and LAN enrollment, over real
HTTP: huge usernames, timing that would tell which names exist, lock-outs aimed at an
operator, and a flood of enrollment requests ahead of the real device.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from conftest import make_token
from hypothesis import given
from hypothesis import strategies as st
from netns import Lan, lan_fixture  # noqa: F401  (provides the `lan` fixture)
from test_network_cli import PASSPHRASE

from simpul.crypto.enrollment import EnrollmentRequest, Grant, pairing_code
from simpul.crypto.exchange_key import ExchangeKey
from simpul.crypto.node_key import NodeKey
from simpul.node import membership
from simpul.node.runtime import DB_FILE, DISCOVERY_ENV, Node, open_node
from simpul.node.server import build_app
from simpul.node.web_sessions import (
    LOCK_AFTER,
    LOCK_MS,
    REMOTE_LOCK_AFTER,
    SOURCE_LOCK_AFTER,
    LoginThrottle,
)

PASSWORD = "kata-sandi-rahasia"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
HTTP_PORT = 8470


@dataclass
class Site:
    node: Node
    base: str

    async def answer(
        self, username: str, password: str, source: str = "127.0.0.1"
    ) -> tuple[int, str]:
        """One login through the form from `source`, as a browser does it; the answer's
        status and page."""
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(local_addr=(source, 0)),
        ) as http:
            async with http.get(f"{self.base}/masuk") as response:
                token = CSRF.search(await response.text()).group(1)
            form = {"csrf": token, "username": username, "password": password}
            async with http.post(f"{self.base}/masuk", data=form) as response:
                return response.status, await response.text()

    async def attempt(self, username: str, password: str, source: str = "127.0.0.1") -> int:
        return (await self.answer(username, password, source))[0]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    data_dir = tmp_path / "node"
    await make_token(data_dir, "ani", "operator")
    async with open_node(data_dir) as node:
        server = TestServer(build_app(node), host="127.0.0.1")
        await server.start_server()
        yield Site(node, str(server.make_url("")).rstrip("/"))
        await server.close()


def stored_bytes(data_dir: Path) -> int:
    files = (data_dir / f"{DB_FILE}{suffix}" for suffix in ("", "-wal"))
    return sum(f.stat().st_size for f in files if f.exists())


async def test_long_usernames_grow_neither_the_database_nor_the_log(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = stored_bytes(site.node.data_dir)
    long_name = "x" * (900 * 1024)
    answers = [await site.answer(long_name, "salah-salah") for _ in range(20)]
    assert {status for status, _ in answers} == {401}
    assert max(len(page) for _, page in answers) < 64 * 1024  # the name is not echoed back
    assert stored_bytes(site.node.data_dir) - before < 64 * 1024
    failures = await site.node.db.fetchone("SELECT count(*) FROM login_failures")
    assert failures[0] == 0
    assert len(caplog.text) < 20 * 1024, "each refusal is one short line"
    assert "username_length=921600" in caplog.text
    assert await site.attempt("ani", PASSWORD) == 200  # nothing was locked by them


async def test_a_failed_login_takes_as_long_for_an_unknown_name_as_for_a_known_one(
    site: Site,
) -> None:
    async def timed(username: str) -> float:
        started = time.perf_counter()
        assert await site.attempt(username, "salah-salah") == 401
        return time.perf_counter() - started

    known, unknown = [], []
    for round_ in range(LOCK_AFTER - 1):  # stays below the lock-out for "ani"
        known.append(await timed("ani"))
        unknown.append(await timed(f"tidak-ada-{round_}"))
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 < ratio < 2, (known, unknown)


async def test_a_neighbour_spraying_names_locks_only_its_own_address(site: Site) -> None:
    names = [f"tebakan-{i}" for i in range(SOURCE_LOCK_AFTER)]
    sprayed = [await site.attempt(name, "salah-salah", "127.0.0.2") for name in names]
    assert sprayed == [401] * SOURCE_LOCK_AFTER
    assert await site.attempt("ani", PASSWORD, "127.0.0.2") == 429
    assert await site.attempt("ani", PASSWORD, "127.0.0.1") == 200


LAN = st.sampled_from(["10.213.7.2", "10.213.7.3", "192.168.1.20", "fe80::1", "2001:db8::5"])
NAMES = st.sampled_from(["ani", "adi", "admin", "x" * 64])


@given(st.lists(st.tuples(LAN, NAMES, st.integers(0, LOCK_MS)), max_size=300))
def test_no_failures_from_the_lan_ever_lock_out_the_nodes_own_machine(
    failures: list[tuple[str, str, int]],
) -> None:
    throttle, now = LoginThrottle(), 0
    for source, name, wait in failures:
        now += wait
        throttle.failed(source, name, now)
    for loopback in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert all(throttle.locked_ms(loopback, name, now) == 0 for name in ("ani", "adi"))


def test_a_name_guessed_from_many_addresses_locks_for_them_all_until_it_expires() -> None:
    throttle = LoginThrottle()
    guessers = [f"10.213.7.{i}" for i in range(2, 2 + REMOTE_LOCK_AFTER)]
    for source in guessers:  # one guess each: no address reaches its own limit
        throttle.failed(source, "ani", 0)
    assert throttle.locked_ms("10.213.7.250", "ani", 1) > 0  # a fresh address too
    assert throttle.locked_ms("10.213.7.250", "adi", 1) == 0  # another name is not
    assert throttle.locked_ms("127.0.0.1", "ani", 1) == 0
    assert throttle.locked_ms("10.213.7.250", "ani", LOCK_MS) == 0  # forgotten


# A browser in one line: log in COUNT times as USER with PASSWORD at BASE; the statuses.
LOGIN_CLIENT = """
import http.cookiejar, re, sys, urllib.error, urllib.parse, urllib.request
base, user, password, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
jar = urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), jar)
page = opener.open(base + "/masuk").read().decode()
csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
statuses = []
for _ in range(count):
    form = urllib.parse.urlencode({"csrf": csrf, "username": user, "password": password})
    try:
        statuses.append(opener.open(base + "/masuk", form.encode()).status)
    except urllib.error.HTTPError as exc:
        statuses.append(exc.code)
print(" ".join(map(str, statuses)))
"""


async def logins(net: Lan, host: int, base: str, password: str, count: int = 1) -> list[int]:
    argv = [sys.executable, "-c", LOGIN_CLIENT, base, "ani", password, str(count)]
    client = await net.spawn(host, argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(client.communicate(), timeout=120)
    return [int(s) for s in out.split()]


@pytest.mark.netns
async def test_a_stranger_on_the_wifi_cannot_lock_the_operator_out(
    lan: Callable[[int], Lan], tmp_path: Path
) -> None:
    """Host 0 runs the node with its page on every interface; host 1 is the stranger,
    host 2 a colleague's laptop."""
    net = lan(3)
    data_dir = tmp_path / "node"
    await make_token(data_dir, "ani", "operator")
    env = {k: v for k, v in os.environ.items() if k != DISCOVERY_ENV} | {"PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "simpul.node", "--data-dir", str(data_dir), "node",
            "--listen", f"0.0.0.0:{HTTP_PORT}"]  # fmt: skip
    node = await net.spawn(
        0, argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env
    )
    assert node.stdout is not None
    await asyncio.wait_for(node.stdout.readline(), timeout=60)
    lan_base = f"http://{net.hosts[0].address}:{HTTP_PORT}"
    stranger = await logins(net, 1, lan_base, "tebak-tebak", LOCK_AFTER + 2)
    assert stranger == [401] * LOCK_AFTER + [429, 429]
    assert await logins(net, 1, lan_base, PASSWORD) == [429]  # locked for the stranger
    assert await logins(net, 0, f"http://127.0.0.1:{HTTP_PORT}", PASSWORD) == [200]
    assert await logins(net, 2, lan_base, PASSWORD) == [200]


def device_request(name: str) -> tuple[NodeKey, ExchangeKey, EnrollmentRequest]:
    key, exchange = NodeKey.generate(), ExchangeKey.generate()
    return key, exchange, EnrollmentRequest.create(key, exchange, name)


async def test_an_enrollment_flood_from_one_address_does_not_keep_the_device_out(
    office_village: tuple[Path, Path],
) -> None:
    office, _ = office_village
    async with open_node(office) as node:
        server = TestServer(build_app(node), host="127.0.0.1")
        await server.start_server()
        url = str(server.make_url("/enroll/requests"))

        async def post(request: EnrollmentRequest, source: str) -> int:
            connector = aiohttp.TCPConnector(local_addr=(source, 0))
            async with (
                aiohttp.ClientSession(connector=connector) as http,
                http.post(url, data=request.to_bytes()) as response,
            ):
                return response.status

        flood = [await post(device_request(f"sampah-{i}")[2], "127.0.0.1") for i in range(49)]
        per_source = membership.MAX_PENDING_PER_SOURCE
        assert flood == [202] * per_source + [429] * (49 - per_source)
        key, exchange, real = device_request("laptop-desa")
        assert await post(real, "127.0.0.2") == 202
        assert await post(real, "127.0.0.2") == 202  # asking again refreshes, not counts
        waiting = membership.pending_requests(office)
        assert len(waiting) == per_source + 1
        found = membership.request_with_code(office, pairing_code(real))
        grant = membership.admit_request(
            office, found, pairing_code(real), PASSPHRASE.strip(), "office", ["1709"], None
        )
        membership.store_grant(office, real.node_id, grant)
        async with (
            aiohttp.ClientSession() as http,
            http.get(str(server.make_url(f"/enroll/grants/{real.node_id}"))) as response,
        ):
            assert response.status == 200
            certificate, _ = Grant.from_bytes(await response.read()).accept(key, exchange)
        assert certificate.node_id == key.node_id_hex

        # the junk expires: after PENDING_SECONDS the queue has room for that address again
        stale = time.time() - membership.PENDING_SECONDS - 1
        for path in (office / membership.NETWORK_DIR / membership.PENDING).glob("*.request"):
            os.utime(path, (stale, stale))
        assert membership.pending_requests(office) == []
        assert await post(device_request("sampah-lagi")[2], "127.0.0.1") == 202
        await server.close()
