"""The appliance: systemd units that systemd itself accepts, the install script run for real
into a temporary root, sd_notify from a running node, the node under the kernel's
write-xor-execute rule (MemoryDenyWriteExecute=), and /metrics through a real server."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from conftest import REPO, Api, make_token, spawn_node

from simpul.node.metrics import metrics
from simpul.node.peers import PeerTable
from simpul.node.runtime import open_node
from simpul.node.server import build_app
from simpul.node.systemd_notify import Notifier, socket_address, watchdog_period

UNITS = ("simpul-node.service", "simpul-hub.service")
USB_UNIT = "simpul-usb-mount@.service"
UDEV_RULE = "etc/udev/rules.d/99-simpul-usb.rules"
INSTALL = REPO / "systemd" / "install.sh"
VENV_BIN = "opt/simpul/venv/bin/simpul"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
WAIT = 60  # seconds: an upper bound on any one wait below, never a sleep


# ----- install.sh and the units --------------------------------------------------------


def run_install(
    root: Path, *args: str, systemd_version: str | None = None
) -> subprocess.CompletedProcess[str]:
    """install.sh into `root`, offline: the venv sees this interpreter's packages."""
    env = {
        **os.environ,
        **({"SYSTEMD_VERSION": systemd_version} if systemd_version else {}),
        "ROOT": str(root),
        "PYTHON": sys.executable,
        "SIMPUL_INSTALL_VENV_ARGS": "--system-site-packages",
        "SIMPUL_INSTALL_PIP_ARGS": "--no-deps",
    }
    result = subprocess.run(
        ["bash", str(INSTALL), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def tree(root: Path) -> set[str]:
    """Every path under root, without bytecode caches (they differ run to run)."""
    return {
        str(path.relative_to(root)) for path in root.rglob("*") if "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root that install.sh ran into twice; asserts the second run changed no file list."""
    root = tmp_path_factory.mktemp("root")
    first = run_install(root)
    files = tree(root)
    units = {unit: (root / "etc/systemd/system" / unit).read_bytes() for unit in UNITS}
    second = run_install(root)
    assert tree(root) == files
    assert {unit: (root / "etc/systemd/system" / unit).read_bytes() for unit in UNITS} == units
    for result in (first, second):
        assert "run yourself: systemctl enable --now simpul-node.service" in result.stdout
    return root


def test_install_puts_venv_units_and_docs_in_place_and_touches_no_state(installed: Path) -> None:
    simpul = installed / VENV_BIN
    assert subprocess.run([simpul, "--help"], capture_output=True, timeout=60).returncode == 0
    for unit in UNITS:
        installed_unit = installed / "etc/systemd/system" / unit
        assert installed_unit.read_bytes() == (REPO / "systemd" / unit).read_bytes()
        assert installed_unit.stat().st_mode & 0o777 == 0o644
    assert (installed / "opt/simpul/doc/operations.md").is_file()
    for path in (f"etc/systemd/system/{USB_UNIT}", UDEV_RULE):
        assert (installed / path).read_bytes() == (REPO / "systemd" / Path(path).name).read_bytes()
    assert not (installed / "var").exists()  # StateDirectory= makes /var/lib/simpul
    assert not (installed / "etc/default/simpul").exists()


def test_install_leaves_the_checkout_clean(installed: Path) -> None:
    assert not (REPO / "build").exists()


def verify_copy(installed: Path, unit: str, out: Path) -> Path:
    """The installed unit with ExecStart pointing into the temporary root."""
    text = (installed / "etc/systemd/system" / unit).read_text()
    copy = out / unit
    copy.write_text(text.replace("/opt/simpul/venv/bin/simpul", str(installed / VENV_BIN)))
    return copy


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", (*UNITS, USB_UNIT))
def test_units_pass_systemd_analyze_verify(installed: Path, unit: str, tmp_path: Path) -> None:
    copy = verify_copy(installed, unit, tmp_path)
    if unit.endswith("@.service"):  # a template is verified as one instance of it
        copy = copy.with_name(unit.replace("@", "@sdb1"))
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    complaints = [line for line in result.stderr.splitlines() if unit in line]
    assert complaints == []  # unknown keys and bad values are warnings with rc 0


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", UNITS)
def test_units_are_hardened(installed: Path, unit: str, tmp_path: Path) -> None:
    copy = verify_copy(installed, unit, tmp_path)
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=20", str(copy)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert result.returncode == 0 and float(found.group(1)) <= 2.0, result.stdout


def test_listen_choice_is_kept_and_backoff_follows_systemd_version(tmp_path: Path) -> None:
    """--listen writes /etc/default/simpul, which a later plain run keeps; the back-off
    drop-in is installed for systemd >= 254 and removed again for an older one."""
    dropins = [tmp_path / f"etc/systemd/system/{unit}.d/backoff.conf" for unit in UNITS]
    result = run_install(tmp_path, "--listen", "0.0.0.0:8470", systemd_version="254")
    defaults = (tmp_path / "etc/default/simpul").read_text()
    assert "SIMPUL_LISTEN=0.0.0.0:8470" in defaults
    for port in ("8470/tcp", "8471/tcp", "5353/udp"):
        assert f"ufw allow {port}" in result.stdout
    assert all(
        dropin.read_bytes() == (REPO / "systemd/backoff.conf").read_bytes() for dropin in dropins
    )
    again = run_install(tmp_path, systemd_version="252")
    assert (tmp_path / "etc/default/simpul").read_text() == defaults
    assert "ufw allow 8470/tcp" in again.stdout
    assert not any(dropin.parent.exists() for dropin in dropins)


def test_uninstall_keeps_data_unless_purge(installed: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(installed, root, symlinks=True)
    data = root / "var/lib/private/simpul"
    data.mkdir(parents=True)
    (data / "simpul.db").write_bytes(b"records")
    (root / "var/lib/simpul").symlink_to("private/simpul")
    run_install(root, "--uninstall")
    assert (data / "simpul.db").read_bytes() == b"records"
    assert not (root / "opt/simpul").exists()
    assert not any((root / "etc/systemd/system" / unit).exists() for unit in (*UNITS, USB_UNIT))
    assert not (root / UDEV_RULE).exists()
    run_install(root, "--uninstall")  # twice is harmless too
    run_install(root, "--uninstall", "--purge")
    assert not (root / "var/lib/private/simpul").exists()
    assert not (root / "var/lib/simpul").is_symlink()


def test_install_refuses_bad_arguments(tmp_path: Path) -> None:
    for args in (["--purge"], ["--listen", "nonsense"], ["--frobnicate"]):
        result = subprocess.run(
            ["bash", str(INSTALL), *args],
            env={**os.environ, "ROOT": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0 and "error:" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_install_script_is_shellcheck_clean() -> None:
    result = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# ----- sd_notify ---------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    yield sock
    sock.close()


async def receive(sock: socket.socket) -> set[str]:
    data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 4096), WAIT)
    return set(data.decode().split("\n"))


async def stop(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), WAIT)


async def test_node_notifies_ready_watchdog_and_stopping(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    path = notify_socket.getsockname()
    process = await spawn_node(
        tmp_path / "node", env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}
    )
    try:
        ready = await receive(notify_socket)
        assert "READY=1" in ready
        assert any(field.startswith("STATUS=serving http://127.0.0.1:") for field in ready)
        assert await receive(notify_socket) == {"WATCHDOG=1"}
        assert await receive(notify_socket) == {"WATCHDOG=1"}  # and again, a second later
    finally:
        code = await stop(process)
    assert code == 0
    assert "STOPPING=1" in await receive(notify_socket)


async def test_notifier_reaches_an_abstract_socket() -> None:
    name = f"@simpul-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(socket_address(name))
        sock.settimeout(WAIT)
        assert Notifier(name, None).send("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_notifier_is_a_no_op_without_a_socket_and_honours_watchdog_pid() -> None:
    assert Notifier(None, 1.0).send("READY=1") is False
    assert Notifier(None, 1.0).period is None
    assert watchdog_period({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}) == 30
    assert watchdog_period({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_period({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_period({}) is None
    assert Notifier("/nonexistent/notify.sock", None).send("READY=1") is False


# ----- MemoryDenyWriteExecute= --------------------------------------------------------

PR_SET_MDWE = 65  # Linux >= 6.3: the kernel's own refusal of writable+executable memory
MDWE_WRAPPER = f"""
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, 1, 0, 0, 0) != 0:
    sys.exit(f"prctl(PR_SET_MDWE) failed: errno {{ctypes.get_errno()}}")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def under_mdwe(wrapper: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(wrapper), "-c", code], capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
async def test_node_serves_records_with_write_xor_execute_memory(
    tmp_path: Path, households_jsonl: list[dict[str, Any]]
) -> None:
    wrapper = tmp_path / "mdwe.py"
    wrapper.write_text(MDWE_WRAPPER)
    probe = under_mdwe(wrapper, "import ctypes; print(ctypes.CDLL(None).prctl(66, 0, 0, 0, 0))")
    if "PR_SET_MDWE" in probe.stderr:
        pytest.skip(f"kernel without PR_SET_MDWE (Linux < 6.3): {probe.stderr.strip()}")
    assert probe.stdout.strip() == "1", probe.stderr  # still on after exec
    refused = under_mdwe(wrapper, "import mmap; mmap.mmap(-1, 4096, prot=7)")
    assert "Permission denied" in refused.stderr  # the rule bites

    data_dir = tmp_path / "node"
    token = await make_token(data_dir)
    process = await spawn_node(data_dir, wrapper=(str(wrapper),))
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), WAIT)).decode()
        found = re.search(r"(http://\S+?)/ ", line)
        assert found, f"node did not start under MDWE: {line!r}"
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            base = found.group(1)
            async with http.post(f"{base}/api/v1/records", json=households_jsonl[0]) as response:
                assert response.status == 201, await response.text()
            async with http.get(f"{base}/metrics") as response:
                assert "simpul_records 1\n" in await response.text()
    finally:
        assert await stop(process) == 0


# ----- /metrics ----------------------------------------------------------------------

METRIC_LINE = re.compile(r'^(simpul_[a-z_]+)(\{[a-z_]+="[^"\n]*"(,[a-z_]+="[^"\n]*")*\})? \S+$')


def parse(text: str) -> dict[str, float]:
    """Samples by `name{labels}`; asserts every line is well formed and every sample's
    family has HELP and TYPE lines before it."""
    assert text.endswith("\n")
    described: dict[str, set[str]] = {}
    samples = {}
    for line in text.splitlines():
        if line.startswith("# "):
            kind, name, _ = line[2:].split(" ", 2)
            described.setdefault(name, set()).add(kind)
            continue
        matched = METRIC_LINE.match(line)
        assert matched, line
        assert described.get(matched.group(1)) == {"HELP", "TYPE"}, line
        key, value = line.rsplit(" ", 1)
        samples[key] = float(value)
    return samples


async def test_metrics_count_records_feeds_and_peers(
    api: Api, households_jsonl: list[dict[str, Any]], tmp_path: Path
) -> None:
    for household in households_jsonl[:3]:
        assert (await api.call("POST", "/api/v1/records", json=household))[0] == 201
    async with open_node(tmp_path / "node") as node:
        table = PeerTable(node.db)
        manual = await table.add_manual("10.1.2.3", 8471)
        await table.mark_sync(manual.id, sent=7, received=2)
        await table.upsert_seen("ab" * 16, "other-network", "10.1.2.4", 8471, foreign=True)
        node_id = node.node_id
    async with api.session.get(api.base + "/metrics") as response:  # loopback: no token
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        samples = parse(await response.text())
    assert samples["simpul_records"] == 3
    assert samples["simpul_entries"] >= 3
    assert samples["simpul_feeds"] == 1
    assert samples["simpul_feed_length"] >= 3
    assert samples["simpul_pending_entries"] == 0
    assert samples['simpul_peers{state="synced"}'] == 1
    assert samples['simpul_peers{state="foreign"}'] == 1
    assert samples['simpul_peer_entries_sent_total{node_id="",address="10.1.2.3:8471"}'] == 7
    assert samples['simpul_peer_entries_received_total{node_id="",address="10.1.2.3:8471"}'] == 2
    assert samples[f'simpul_info{{node_id="{node_id}",network_id=""}}'] == 1
    started = samples["simpul_process_start_time_seconds"]
    assert 0 < time.time() - started < 24 * 3600


async def test_metrics_off_loopback_need_a_token(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    token = await make_token(data_dir)
    async with open_node(data_dir) as node:
        app = build_app(node)
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda key, default=None: (
            ("192.0.2.10", 40000) if key == "peername" else default
        )

        async def scrape(headers: dict[str, str]) -> int:
            request = make_mocked_request(
                "GET", "/metrics", headers=headers, app=app, transport=transport
            )
            assert request.remote == "192.0.2.10"
            return (await metrics(request)).status

        assert await scrape({}) == 401
        assert await scrape({"Authorization": "Bearer wrong"}) == 401
        assert await scrape({"Authorization": f"Bearer {token}"}) == 200
