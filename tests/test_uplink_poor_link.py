"""The uplink's poor-link acceptance, on the tests' own shaped link (no netem needed).

A real `simpul node` process uplinks to a real `simpul hub` process on loopback through
`tests/link_shaper.py`: 256 kbit/s each way, 300 ms one-way delay, a 2 s stall every 10 s
(the way packet loss looks to an application over TCP) and every open connection reset at
random moments about every 8 s. With a 64 KiB daily budget the uplink stops at its figure;
with the budget raised, 1,000 and more households reach the hub through cuts and stalls,
and the node knows the hub holds everything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from pathlib import Path

from conftest import NodeProcess, generate, simpul_cli, start_node_process
from hub_processes import admit_hub, hub_status, start_hub, uplink_of
from link_shaper import LinkShaper, PoorLink
from test_lan_sync import eventually
from test_network_cli import create_network

log = logging.getLogger(__name__)

POOR_LINK = PoorLink(
    rate_bits=256_000, delay=0.3, stall_every=10.0, stall_seconds=2.0, cut_every=8.0, seed=31
)
POOR_BUDGET = 64 * 1024
POOR_OVERSHOOT = 48 * 1024  # one entries frame of 100 households and a push answer
BUDGET_SECONDS = 120
DELIVERY_SECONDS = 240


async def test_poor_link_delivers_households_and_the_budget_stops_the_uplink(
    tmp_path: Path, node_processes: list[NodeProcess]
) -> None:
    office, hub_dir = tmp_path / "office", tmp_path / "hub"
    create_network(office)
    households = tmp_path / "households.csv"
    households.write_text(generate(2100, "csv", seed=31))  # about half in the scope 1709
    imported = simpul_cli(office, "import", "--json", str(households))
    assert imported.returncode == 0, imported.stderr
    held = json.loads(imported.stdout)["created"]
    assert held >= 1000
    admit_hub(office, hub_dir, tmp_path)
    hub = await start_hub(hub_dir, "127.0.0.1:0", "127.0.0.1:0", tmp_path / "hub.log")
    try:
        with LinkShaper(hub.port, POOR_LINK) as link:
            hub_url = f"https://127.0.0.1:{link.port}"
            node = await start_node_process(
                office, "--hub", hub_url, "--uplink-budget", f"{POOR_BUDGET}/1G",
                "--hub-period", "2",
            )  # fmt: skip
            node_processes.append(node)

            async def stopped() -> bool:
                return uplink_of(office)["state"] == "budget"

            await eventually(stopped, "the budget stops the uplink", BUDGET_SECONDS)
            spent = uplink_of(office)
            assert POOR_BUDGET <= spent["bytes_today"] <= POOR_BUDGET + POOR_OVERSHOOT, spent
            assert (await hub_status(hub.status_port))["records"] < held
            node.process.send_signal(signal.SIGTERM)
            await node.process.wait()

            cuts_before = link.cuts
            started = time.monotonic()
            again = await start_node_process(office, "--uplink-budget", "50M", "--hub-period", "2")
            node_processes.append(again)

            async def arrived() -> bool:
                return (await hub_status(hub.status_port))["records"] == held

            await eventually(arrived, f"{held} households reach the hub", DELIVERY_SECONDS)
            took = time.monotonic() - started
            log.info("poor_link delivered=%d seconds=%.1f cuts=%d", held, took, link.cuts)
            assert link.cuts > cuts_before, "the link was never cut during the delivery"

            async def known() -> bool:
                return uplink_of(office)["still_to_send"] == 0

            await eventually(known, "the node knows the hub holds everything", 60)
    finally:
        hub.process.kill()
        await asyncio.wait_for(hub.process.wait(), timeout=30)
