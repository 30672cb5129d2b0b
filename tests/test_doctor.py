"""`simpul doctor` on real data dirs: each problem is found, explained, and comes with its fix;
a 1970 clock (libfaketime, as on a Raspberry Pi without a clock battery) stops writes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from conftest import NodeProcess, generate, make_token, simpul_cli, start_node_process
from test_network_cli import create_network

LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))), None)
IN_1970 = {
    "LD_PRELOAD": str(LIBFAKETIME),
    "FAKETIME": "@1970-01-02 00:00:00",
    "FAKETIME_DONT_FAKE_MONOTONIC": "1",
}
needs_faketime = pytest.mark.skipif(LIBFAKETIME is None, reason="faketime (Debian) not installed")


def cli(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`simpul` as a process, with `env` added (a fake clock)."""
    return subprocess.run(
        [sys.executable, "-m", "simpul.node", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip


def doctor(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    """Exit code and the checks by name (a name that repeats keeps its worst finding)."""
    result = cli(data_dir, "doctor", "--json", *args, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    checks: dict[str, dict] = {}
    for check in json.loads(result.stdout):
        if checks.get(check["name"], {}).get("status") != "fail":
            checks[check["name"]] = check
    return result.returncode, checks


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    """A data dir with 20 imported households."""
    data_dir = tmp_path / "node"
    csv_file = tmp_path / "h.csv"
    csv_file.write_text(generate(20, "csv"))
    assert simpul_cli(data_dir, "import", str(csv_file)).returncode == 0
    return data_dir


def records(data_dir: Path) -> int:
    result = simpul_cli(data_dir, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["records"]


def test_a_healthy_node_passes(node_dir: Path) -> None:
    code, checks = doctor(node_dir)
    assert code == 0
    assert {c["status"] for c in checks.values()} <= {"ok", "warn"}
    assert checks["feeds"]["explanation"].endswith("20 entries verified")
    assert checks["hub"]["explanation"] == "not configured"
    assert {"permissions", "database", "clock", "free disk", "multicast", "certificate"} <= set(
        checks
    )


@pytest.mark.parametrize("where", ["header", "page"])
def test_a_corrupted_database_is_reported_with_its_fix(node_dir: Path, where: str) -> None:
    database = node_dir / "simpul.db"
    with database.open("r+b") as file:
        file.seek(0 if where == "header" else 4096 * 5 + 200)
        file.write(b"\x5a" * 3000)
    code, checks = doctor(node_dir)
    assert code == 1
    found = checks["database"]
    assert found["status"] == "fail"
    assert "damaged" in found["explanation"]
    assert "restore BACKUP" in found["fix"] and ".recover" in found["fix"]
    assert "feeds" not in checks  # a damaged file is never opened by the node
    if where == "header":  # the node itself refuses it with one line
        refused = simpul_cli(node_dir, "status")
        assert refused.returncode == 1 and "cannot open database" in refused.stderr


def test_an_altered_feed_is_reported(node_dir: Path) -> None:
    with sqlite3.connect(node_dir / "simpul.db") as conn:
        conn.execute("UPDATE entries SET change = CAST(change || x'00' AS BLOB) WHERE seq = 3")
    code, checks = doctor(node_dir)
    assert code == 1
    assert checks["feeds"]["status"] == "fail"
    assert "does not verify" in checks["feeds"]["explanation"]


def test_a_key_readable_by_others_is_reported_with_chmod(node_dir: Path) -> None:
    (node_dir / "node.key").chmod(0o644)
    code, checks = doctor(node_dir)
    assert code == 1
    found = checks["key file permissions"]
    assert found["status"] == "fail" and "644" in found["explanation"]
    assert found["fix"] == f"chmod 600 {node_dir / 'node.key'}"
    (node_dir / "node.key").chmod(0o600)
    node_dir.chmod(0o755)
    code, checks = doctor(node_dir)
    assert code == 1 and checks["data dir permissions"]["fix"] == f"chmod 700 {node_dir}"


def test_an_unreachable_hub_and_a_missing_node(node_dir: Path, tmp_path: Path) -> None:
    code, checks = doctor(node_dir, "--hub", "http://127.0.0.1:1")
    assert code == 1 and checks["hub"]["status"] == "fail"
    code, checks = doctor(tmp_path / "nowhere")
    assert code == 1 and checks["data dir"]["status"] == "fail"
    assert not (tmp_path / "nowhere").exists()


@needs_faketime
def test_a_1970_clock_fails_the_check_and_refuses_writes(node_dir: Path, tmp_path: Path) -> None:
    code, checks = doctor(node_dir, env=IN_1970)
    assert code == 1
    clock = checks["clock"]
    assert clock["status"] == "fail"
    assert "1970-01-02" in clock["explanation"] and "newest signed change" in clock["explanation"]
    assert "date -u -s" in clock["fix"] and "set-ntp" in clock["fix"]
    before = records(node_dir)
    more = tmp_path / "more.csv"
    more.write_text(generate(3, "csv", seed=99))
    refused = cli(node_dir, "import", str(more), env=IN_1970)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "clock is wrong" in refused.stderr
    assert records(node_dir) == before


@needs_faketime
def test_a_fresh_node_in_1970_is_judged_by_the_release_date_and_its_certificate(
    tmp_path: Path,
) -> None:
    admin = tmp_path / "admin"
    create_network(admin)
    code, checks = doctor(admin, env=IN_1970)
    assert code == 1 and checks["clock"]["status"] == "fail"
    # certificates are judged at the floor, not at 1970: not "not yet valid", not expired
    assert checks["certificate"]["status"] == "ok"
    assert checks["certificate"]["explanation"].startswith("valid until 20")


@needs_faketime
async def test_the_api_refuses_writes_under_a_1970_clock(
    node_dir: Path, node_processes: list[NodeProcess], households_jsonl: list
) -> None:
    token = await make_token(node_dir)
    node = await start_node_process(node_dir, env=IN_1970)
    node_processes.append(node)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{node.url}/api/v1/records", json=households_jsonl[40]) as answer:
            assert answer.status == 503
            body = await answer.json()
        assert "clock is wrong" in body["error"] and body["hint"] == "simpul doctor"
        async with http.get(f"{node.url}/api/v1/records?limit=1") as answer:
            assert answer.status == 200 and (await answer.json())["total"] == 20
        async with http.get(f"{node.url}/metrics") as answer:
            text = await answer.text()
    behind = next(line for line in text.splitlines() if line.startswith("simpul_clock_behind"))
    assert float(behind.split()[1]) > 50 * 365 * 86400


@needs_faketime
def test_a_clock_stepped_back_a_little_keeps_checkpoint_times_in_order(
    node_dir: Path, tmp_path: Path
) -> None:
    with closing(sqlite3.connect(node_dir / "simpul.db")) as conn:
        (newest,) = conn.execute("SELECT max(at_ms) FROM checkpoints").fetchone()
    two_minutes_back = datetime.fromtimestamp(newest / 1000 - 120, UTC)
    clock = {**IN_1970, "FAKETIME": two_minutes_back.strftime("@%Y-%m-%d %H:%M:%S")}
    more = tmp_path / "more.csv"
    more.write_text(generate(3, "csv", seed=99))
    stepped = cli(node_dir, "import", str(more), env=clock)
    assert stepped.returncode == 0, stepped.stderr  # within the tolerance: work goes on
    with closing(sqlite3.connect(node_dir / "simpul.db")) as conn:
        times = [at for (at,) in conn.execute("SELECT at_ms FROM checkpoints ORDER BY seq")]
    assert len(times) == 2 and times == sorted(times)
