"""The uplink acceptance: an office of three nodes and a district hub, real processes.

Three `simpul node` processes on a bridged LAN of namespaces (tests/netns.py) and `simpul
hub` in an upstream namespace that no office host can reach. Records made on every node
spread over the LAN; nothing reaches the hub. The test then gives one node a link: the
whole office's records reach the hub through that node alone (the hub's own counters show
sessions from it and from no other node), every node learns that the hub holds them, and
households imported at the hub come back down and spread over the LAN. A second node gets
a link, the uplink node is killed, and the second takes over within a lease (the test
sets `--uplink-lease` short, so it waits seconds, not the default 30 s, for the silence).

The poor-link acceptance (256 kbit/s, 300 ms, stalls, cuts) is in
`tests/test_uplink_poor_link.py`, on the tests' own link shaper.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import generate, simpul_cli
from enrolled_dirs import Networks
from hub_processes import HubProcess, Spawn, admit_hub, hub_status, start_hub, uplink_of
from netns import Lan, lan_fixture  # noqa: F401  (provides the `lan` fixture)
from test_lan_netns import SCOPE, HostNode, converged, start_node
from test_lan_sync import eventually

HUB_PORT, HUB_STATUS_PORT = 8443, 8472
LEASE_SECONDS = 8  # --uplink-lease: the term rises every 8/3 s, a standby waits 8 s
TAKEOVER_SECONDS = 60


def spawn_upstream(net: Lan) -> Spawn:
    upstream = net.upstream
    assert upstream is not None
    return functools.partial(net.spawn_in, upstream.namespace)


def office_templates(networks: Networks, tmp_path: Path) -> list[Path]:
    """The office's data dirs, the admin's copied first: admitting the hub changes it."""
    admin, *others = networks.office
    return [shutil.copytree(admin, tmp_path / "admin"), *others]


async def hub_upstream(
    net: Lan, admin: Path, hub_dir: Path, tmp_path: Path
) -> tuple[HubProcess, Spawn]:
    """The upstream namespace with `simpul hub` running in it, trusting admin's network."""
    upstream = net.add_upstream()
    admit_hub(admin, hub_dir, tmp_path)
    spawn = spawn_upstream(net)
    hub = await start_hub(
        hub_dir, f"{upstream.address}:{HUB_PORT}", f"127.0.0.1:{HUB_STATUS_PORT}",
        tmp_path / "hub.log", spawn,
    )  # fmt: skip
    return hub, spawn


@pytest.mark.netns
async def test_office_reaches_the_hub_through_one_node_and_another_takes_over(
    lan: Callable[[int], Lan],
    networks: Networks,
    tmp_path: Path,
    households_jsonl: list[dict[str, Any]],
) -> None:
    net = lan(3)
    hub_dir = tmp_path / "hub"
    templates = office_templates(networks, tmp_path)
    hub, upstream_spawn = await hub_upstream(net, templates[0], hub_dir, tmp_path)
    assert net.upstream is not None
    upstream = net.upstream

    async def hub_facts() -> dict[str, Any]:
        return await hub_status(hub.status_port, upstream_spawn)

    hub_args = ("--hub", f"https://{upstream.address}:{HUB_PORT}", "--hub-period", "3",
                "--uplink-lease", str(LEASE_SECONDS))  # fmt: skip
    office = [
        await start_node(net, i, template, tmp_path, *hub_args)
        for i, template in enumerate(templates)
    ]
    households = iter(h for h in households_jsonl if h["kode_wilayah"].startswith(SCOPE))
    made: set[str] = set()
    for node in office:
        for household in [next(households) for _ in range(2)]:
            await node.api("POST", "/api/v1/records", household)
            made.add(household["id"])
    await eventually(converged(office, made), "the office converges over the LAN")
    assert all(uplink_of(node.data_dir)["reachable"] is not True for node in office)
    assert (await hub_facts())["records"] == 0

    uplink, spare, bystander = office[1], office[2], office[0]
    net.link_upstream(uplink.host)

    async def at_hub() -> bool:
        return (await hub_facts())["records"] == len(made)

    await eventually(at_hub, "every office record reaches the hub")
    facts = await hub_facts()
    assert set(facts["nodes"]) == {uplink.node_id}, facts["nodes"]
    assert facts["refusals"] == {}

    async def everyone_knows() -> bool:
        states = [uplink_of(node.data_dir) for node in office]
        return all(s["still_to_send"] == 0 and s["uplink_node"] == uplink.node_id for s in states)

    await eventually(everyone_knows, "every node knows the hub holds it all, and who uplinks")

    # made at the district: comes down through the uplink, then over the LAN
    district = tmp_path / "district.csv"
    district.write_text(generate(8, "csv", seed=29))  # the rows outside 1709 are refused
    imported = simpul_cli(hub_dir, "hub", "import", "--network", networks.network_id, str(district))
    assert imported.returncode == 0, imported.stderr
    total = (await hub_facts())["records"]
    assert total > len(made), imported.stdout
    await eventually(lambda: _all_hold(office, total), "the hub's households reach all three nodes")

    # the uplink vanishes; a node with a link takes over within a lease and a sync round
    net.link_upstream(spare.host)
    assert uplink.process is not None
    uplink.process.kill()
    household = next(households)
    await bystander.api("POST", "/api/v1/records", household)

    async def taken_over() -> bool:
        facts = await hub_facts()
        return spare.node_id in facts["nodes"] and facts["records"] == total + 1

    async with asyncio.timeout(TAKEOVER_SECONDS + 30):
        await eventually(taken_over, "the spare node takes over and delivers the new record")
    facts = await hub_facts()
    assert bystander.node_id not in facts["nodes"]
    assert facts["refusals"] == {}


async def _all_hold(nodes: list[HostNode], count: int) -> bool:
    return all(len(node.records()) == count for node in nodes)
