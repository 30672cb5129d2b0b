"""The real-LAN acceptance: nodes on separate hosts find each other by mDNS and converge.

Four `simpul node` processes, each on its own host of a bridged LAN of network namespaces
(tests/netns.py): three of one network (one created it, two enrolled by file) and one of
another network. Nobody runs `peer add`; the nodes know each other only from zeroconf.
Edits go through each node's JSON API, called from inside its namespace (the bridge is not
reachable from the test's own namespace); convergence is read straight from each store:
every record with the same Automerge heads on the three nodes. One host's cable is then
pulled, both sides edit (one household concurrently, on different fields), the cable goes
back in and all three converge again with both edits merged. The other network's node is
only ever logged as foreign: no record crosses between the two networks.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import stored
from conftest import make_token, simpul_cli
from enrolled_dirs import Networks
from netns import Lan, lan_fixture  # noqa: F401  (provides the `lan` fixture)
from test_lan_sync import eventually

from simpul.crypto.node_key import NodeKey
from simpul.node.runtime import DISCOVERY_ENV

HTTP_PORT, SYNC_PORT = 8470, 8471
SYNC_PERIOD = "5"
SCOPE = "1709"  # the write scope of both test networks
FOREIGN_WARNING = "peer foreign network"
NO_INTERFACE = "discovery idle reason=no-interface"

# One JSON API call to the node of this host: METHOD PATH TOKEN [BODY]; exit 0 on 2xx.
API_CLIENT = f"""
import sys, urllib.request
method, path, token, *body = sys.argv[1:]
request = urllib.request.Request(
    "http://127.0.0.1:{HTTP_PORT}" + path, method=method,
    data=body[0].encode() if body else None,
    headers={{"Authorization": "Bearer " + token, "Content-Type": "application/json"}},
)
urllib.request.urlopen(request, timeout=30).close()
"""


@dataclass
class HostNode:
    """`simpul node` running on host `host` of the LAN; its stderr goes to `log`."""

    net: Lan
    host: int
    data_dir: Path
    node_id: str
    token: str
    log: Path
    process: asyncio.subprocess.Process | None = None

    async def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        """Call this node's JSON API from inside its namespace; fail unless it answers 2xx."""
        argv = [sys.executable, "-c", API_CLIENT, method, path, self.token]
        call = await self.net.spawn(
            self.host, argv + ([json.dumps(body)] if body is not None else []),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, error = await call.communicate()
        assert call.returncode == 0, f"{method} {path} on host {self.host}: {error.decode()}"

    def records(self) -> dict[str, dict[str, Any]]:
        return {i: doc.household() for i, doc in stored.documents(self.data_dir).items()}

    def heads(self) -> dict[str, list[str]]:
        return stored.heads(self.data_dir)

    def logged(self, text: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if text in line]


async def start_node(net: Lan, host: int, template: Path, tmp_path: Path, *extra: str) -> HostNode:
    """Copy a data dir, give it an API token and run `simpul node` on `host` with it
    (and `extra` arguments)."""
    data_dir = tmp_path / f"host{host}-{template.name}"
    shutil.copytree(template, data_dir)
    node = HostNode(
        net, host, data_dir, NodeKey.load(data_dir / "node.key").node_id_hex,
        await make_token(data_dir), tmp_path / f"host{host}.log",
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != DISCOVERY_ENV} | {"PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "simpul.node", "--data-dir", str(data_dir), "node",
            "--listen", f"0.0.0.0:{HTTP_PORT}", "--sync-port", str(SYNC_PORT),
            "--sync-period", SYNC_PERIOD, *extra]  # fmt: skip
    with node.log.open("wb") as stderr:
        process = await net.spawn(
            host, argv, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env
        )
    assert process.stdout is not None
    ready = await asyncio.wait_for(process.stdout.readline(), timeout=60)
    assert f"(LAN sync on port {SYNC_PORT})".encode() in ready, ready
    node.process = process
    return node


def converged(nodes: list[HostNode], ids: set[str]) -> Callable[[], Awaitable[bool]]:
    """A check for `eventually`: the nodes hold exactly `ids`, each with the same heads."""

    async def check() -> bool:
        first, *others = (node.heads() for node in nodes)
        return set(first) == ids and all(heads == first for heads in others)

    return check


def peers_of(node: HostNode) -> dict[str, dict[str, Any]]:
    listed = simpul_cli(node.data_dir, "peers", "--json")
    assert listed.returncode == 0, listed.stderr
    return {row["node_id"]: row for row in json.loads(listed.stdout)}


@pytest.mark.netns
async def test_nodes_found_by_mdns_converge_across_a_cut_and_ignore_another_network(
    lan: Callable[[int], Lan],
    networks: Networks,
    tmp_path: Path,
    households_jsonl: list[dict[str, Any]],
) -> None:
    net = lan(4)
    templates = [*networks.office, networks.foreign]
    *office, foreign = [await start_node(net, i, t, tmp_path) for i, t in enumerate(templates)]
    households = iter(h for h in households_jsonl if h["kode_wilayah"].startswith(SCOPE))

    async def create(node: HostNode, count: int) -> set[str]:
        made = [next(households) for _ in range(count)]
        for household in made:
            await node.api("POST", "/api/v1/records", household)
        return {household["id"] for household in made}

    theirs = await create(foreign, 2)
    ours = set().union(*[await create(node, 3) for node in office])
    await eventually(converged(office, ours), "the three office nodes hold all nine records")

    # pull host 2's cable; edit on both sides, one household concurrently on two fields
    cut, steady = office[2], office[0]
    cut_failure = f"reason=cannot sync with https://{net.hosts[cut.host].address}:{SYNC_PORT}"
    failures_before = len(steady.logged(cut_failure))
    net.link_down(cut.host)

    async def both_sides_noticed() -> bool:
        return bool(cut.logged(NO_INTERFACE)) and (
            len(steady.logged(cut_failure)) > failures_before
        )

    await eventually(both_sides_noticed, "both sides of the cut to notice it")
    shared = min(ours)
    desil = 1 if steady.records()[shared]["desil"] != 1 else 2
    await cut.api("PATCH", f"/api/v1/records/{shared}", {"desil": desil})
    await steady.api("PATCH", f"/api/v1/records/{shared}", {"alamat": "Jl. Rukun 7"})
    cut_side, steady_side = await create(cut, 2), await create(steady, 2)
    side = office[:2]
    await eventually(converged(side, ours | steady_side), "the connected side to keep syncing")
    assert not cut_side & (set(steady.records()) | set(office[1].records()))
    assert set(cut.records()) == ours | cut_side
    net.link_up(cut.host)

    everything = ours | cut_side | steady_side
    await eventually(converged(office, everything), "all three converge after the cut")
    for node in office:
        merged = node.records()[shared]
        assert (merged["desil"], merged["alamat"]) == (desil, "Jl. Rukun 7"), node.host

    # the other network's node: logged as foreign by everyone, no record crossed either way
    assert set(foreign.records()) == theirs
    assert all(not theirs & set(node.records()) for node in office)
    for node in office:
        warning = node.logged(FOREIGN_WARNING)
        assert warning and "WARNING" in warning[0], node.log.read_text()
        assert f"node_id={foreign.node_id} network_id={networks.foreign_network_id}" in warning[0]
        assert any(f"node_id={node.node_id} " in line for line in foreign.logged(FOREIGN_WARNING))
        peers = peers_of(node)
        assert peers.pop(foreign.node_id)["state"] == "foreign"
        assert set(peers) == {o.node_id for o in office if o is not node}
        assert all((row["source"], row["network_id"]) == ("mdns", networks.network_id)
                   for row in peers.values())  # fmt: skip
    assert all(row["state"] == "foreign" for row in peers_of(foreign).values())
