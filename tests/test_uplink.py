"""The uplink of a real node process to a real hub process on loopback: the byte budget
stops it cleanly at its figure, the settings are kept in the data dir, and once the
budget allows, everything arrives and every record says it reached the hub."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp
import pytest
from conftest import NodeProcess, generate, make_token, simpul_cli, start_node_process
from hub_processes import admit_hub, hub_status, start_hub, uplink_of
from test_lan_sync import eventually
from test_network_cli import create_network

from simpul.node.uplink import UplinkGossip
from simpul.node.uplink_session import FRAME_ENTRIES
from simpul.node.uplink_state import UplinkConfigError, UplinkState, parse_budget
from simpul.sync.frontier import Frontier

HOUSEHOLDS = 1000
BUDGET = 100 * 1024
# the budget is checked before every entries frame of FRAME_ENTRIES households (~230 B
# each, compressed), so the uplink stops within one frame (and a push answer) of it
OVERSHOOT = FRAME_ENTRIES * 400 + 8 * 1024


def test_budget_sizes_parse_and_bad_ones_say_why() -> None:
    assert parse_budget("20M/300M") == (20 * 1024**2, 300 * 1024**2)
    assert parse_budget("500k") == (500 * 1024, 30 * 500 * 1024)
    assert parse_budget("1.5G/2G")[0] == int(1.5 * 1024**3)
    for bad in ("", "lots", "5M/", "-1M"):
        with pytest.raises(UplinkConfigError, match="not a size"):
            parse_budget(bad)


def test_node_refuses_a_hub_url_it_cannot_use(tmp_path: Path) -> None:
    started = simpul_cli(tmp_path / "node", "node", "--hub", "http://10.0.0.1")
    assert started.returncode == 1
    assert "https://HOST:PORT" in started.stderr and "Traceback" not in started.stderr


def test_node_refuses_an_uplink_lease_it_cannot_use(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    too_short = simpul_cli(
        data_dir, "node", "--hub", "https://10.0.0.1:8443", "--uplink-lease", "1"
    )
    assert too_short.returncode == 2 and "--uplink-lease" in too_short.stderr
    assert "Traceback" not in too_short.stderr
    data_dir.mkdir()
    (data_dir / "uplink.json").write_text(
        '{"hub": "https://10.0.0.1:8443", "lease_seconds": "soon"}'
    )
    damaged = simpul_cli(data_dir, "node")
    assert damaged.returncode == 1, damaged.stderr
    assert "uplink.json is damaged" in damaged.stderr and "lease" in damaged.stderr
    assert "Traceback" not in damaged.stderr


async def test_budget_stops_the_uplink_then_everything_arrives_and_is_marked_delivered(
    tmp_path: Path, node_processes: list[NodeProcess]
) -> None:
    office, hub_dir = tmp_path / "office", tmp_path / "hub"
    create_network(office)
    households = tmp_path / "households.csv"
    households.write_text(generate(2 * HOUSEHOLDS, "csv"))  # half in 1709, the office's scope
    imported = simpul_cli(office, "import", "--json", str(households))
    assert imported.returncode == 0, imported.stderr
    held = json.loads(imported.stdout)["created"]
    assert held > HOUSEHOLDS * 0.8
    token = await make_token(office)
    admit_hub(office, hub_dir, tmp_path)
    hub = await start_hub(hub_dir, "127.0.0.1:0", "127.0.0.1:0", tmp_path / "hub.log")
    try:
        hub_url = f"https://127.0.0.1:{hub.port}"
        node = await start_node_process(
            office, "--hub", hub_url, "--uplink-budget", f"{BUDGET}/1G", "--hub-period", "2",
            "--uplink-lease", "20",
        )  # fmt: skip
        node_processes.append(node)

        async def stopped() -> bool:
            return uplink_of(office)["state"] == "budget"

        await eventually(stopped, "the uplink stops at its budget")
        spent = uplink_of(office)
        assert BUDGET <= spent["bytes_today"] <= BUDGET + OVERSHOOT, spent
        assert spent["bytes_this_month"] == spent["bytes_today"]
        assert spent["still_to_send"] > 0
        assert "budget" in (spent["last_error"] or "")
        assert (await hub_status(hub.status_port))["records"] < held
        shown = simpul_cli(office, "status")
        assert f"hub: {hub_url}" in shown.stdout and "state: budget" in shown.stdout

        node.process.send_signal(signal.SIGTERM)
        await node.process.wait()
        again = await start_node_process(office, "--uplink-budget", "50M", "--hub-period", "2")
        node_processes.append(again)  # the hub URL and the lease were kept in the data dir
        kept = json.loads((office / "uplink.json").read_text())
        assert (kept["hub"], kept["lease_seconds"]) == (hub_url, 20)

        async def delivered() -> bool:
            return uplink_of(office)["still_to_send"] == 0

        await eventually(delivered, "everything reaches the hub once the budget allows")
        assert (await hub_status(hub.status_port))["records"] == held
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                again.url + "/api/v1/records?limit=50",
                headers={"Authorization": f"Bearer {token}"},
            ) as answer,
        ):
            items = (await answer.json())["items"]
        assert len(items) == 50 and all(r["_meta"]["delivered"] is True for r in items)
        assert uplink_of(office)["state"] == "uplink"
    finally:
        hub.process.kill()
        await asyncio.wait_for(hub.process.wait(), timeout=30)


def test_uplink_gossip_settles_on_one_node_and_merges_the_hub_frontier() -> None:
    low, high = "0" * 31 + "1", "f" * 32
    origin_a, origin_b = bytes(16), bytes([1] * 16)
    at_low = UplinkGossip(low, UplinkState())
    at_high = UplinkGossip(high, UplinkState(hub_frontier={origin_a.hex(): 5}))
    at_high.claiming = at_low.claiming = True  # both reached the hub at once
    at_low.term = at_high.term = 1
    at_low.state.learn(Frontier({origin_a: 3, origin_b: 7}))
    at_high.hear(at_low.announce())
    at_low.hear(at_high.announce())
    assert at_high.should_stand_by() == low  # the lower node id keeps the role
    assert at_low.should_stand_by() is None
    assert at_high.state.frontier() == Frontier({origin_a: 5, origin_b: 7})
    assert at_low.state.frontier() == at_high.state.frontier()

    bystander = UplinkGossip("a" * 32, UplinkState())
    bystander.hear(at_low.announce())
    assert bystander.should_stand_by() == low
    for junk in ("", "x", "a.b.c", f"{low}.2.not-base64!", f"{low}.1.{'A' * 4}"):
        bystander.hear(junk)  # ignored, logged
    assert bystander.should_stand_by() == low
    assert bystander.state.frontier() == at_low.state.frontier()
