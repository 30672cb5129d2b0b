"""LAN discovery and the peers table.

The `netns` tests run real `simpul node` processes, each on its own host of a bridged LAN
of network namespaces (tests/netns.py), and watch their peers tables fill by mDNS alone.
The others exercise the peers table, `simpul peer add` / `simpul peers`, the TXT record
and how announcements are judged, in one process.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import re
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import Api, simpul_cli
from enrolled_dirs import Networks
from netns import Lan, lan_fixture  # noqa: F401  (provides the `lan` fixture)
from zeroconf import QuietLogger
from zeroconf.asyncio import AsyncServiceInfo

from simpul.crypto.node_key import NodeKey
from simpul.node import peers as peers_module
from simpul.node.discovery import (
    SERVICE_TYPE,
    Announcement,
    Discovery,
    InvalidAnnouncement,
    parse_announcement,
    quiet_interface_errors,
)
from simpul.node.peers import DISCOVERED, FAILED, FOREIGN, SYNCED, Peer, PeerTable, now_ms
from simpul.node.runtime import DISCOVERY_ENV
from simpul.sync.database import Database

WAIT_SECONDS = 30
SYNC_PORT = 8471  # the default: HTTP port 8470 + 1

# A zeroconf browser that prints every `_simpul._tcp` service it resolves as one JSON line.
OBSERVER = """
import asyncio, json, sys
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf
TYPE = "_simpul._tcp.local."
async def main():
    zc = AsyncZeroconf(interfaces=[sys.argv[1]], ip_version=IPVersion.V4Only)
    async def show(name):
        info = AsyncServiceInfo(TYPE, name)
        if await info.async_request(zc.zeroconf, 3000):
            txt = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
            print(json.dumps({"name": name, "port": info.port, "txt": txt}), flush=True)
    def changed(zeroconf, service_type, name, state_change):
        asyncio.ensure_future(show(name))
    AsyncServiceBrowser(zc.zeroconf, TYPE, handlers=[changed])
    await asyncio.Event().wait()
asyncio.run(main())
"""


# ----- in one process -----------------------------------------------------------------------


@pytest.fixture
async def table(tmp_path: Path) -> AsyncIterator[PeerTable]:
    db = await Database.open(tmp_path / "simpul.db")
    yield PeerTable(db)
    await db.close()


NET = "ab" * 32
OTHER_NET = "cd" * 32
NODE_A, NODE_B, NODE_C = "a" * 32, "b" * 32, "c" * 32


async def test_peer_table_states_follow_announcements_and_syncs(table: PeerTable) -> None:
    first = await table.upsert_seen(NODE_B, NET, "10.1.1.2", 8471, foreign=False)
    assert first is not None and (first.state, first.source) == (DISCOVERED, "mdns")
    assert first.first_seen_ms == first.last_seen_ms
    await table.mark_sync(first.id, sent=5, received=7)
    moved = await table.upsert_seen(NODE_B, NET, "10.1.1.9", 8471, foreign=False)
    assert moved is not None and (moved.state, moved.host, moved.id) == (SYNCED, "10.1.1.9", 1)
    assert (moved.entries_sent, moved.entries_received) == (5, 7)
    assert moved.last_sync_ms is not None and moved.first_seen_ms == first.first_seen_ms
    await table.mark_sync(first.id, error="handshake refused")
    (failed,) = await table.list_all()
    assert (failed.state, failed.last_error, failed.last_sync_ms) == (
        FAILED, "handshake refused", moved.last_sync_ms,
    )  # fmt: skip
    left = await table.upsert_seen(NODE_B, OTHER_NET, "10.1.1.9", 8471, foreign=True)
    assert left is not None and (left.state, left.network_id) == (FOREIGN, OTHER_NET)


async def test_peer_table_has_a_cap_for_announcement_floods(
    table: PeerTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers_module, "MAX_MDNS_PEERS", 2)
    await table.add_manual("10.1.1.50", 8471)
    assert await table.upsert_seen(NODE_A, NET, "10.1.1.1", 1, foreign=False)
    assert await table.upsert_seen(NODE_B, NET, "10.1.1.2", 1, foreign=False)
    assert await table.upsert_seen(NODE_C, NET, "10.1.1.3", 1, foreign=False) is None
    assert await table.upsert_seen(NODE_B, NET, "10.1.1.2", 1, foreign=False) is not None
    assert len(await table.list_all()) == 3


def test_peer_add_and_peers_round_trip(tmp_path: Path) -> None:
    node = tmp_path / "node"
    assert simpul_cli(node, "peers").stdout.strip() == "no peers yet"
    for _ in range(2):
        added = simpul_cli(node, "peer", "add", "192.168.7.20:8471")
        assert added.returncode == 0, added.stderr
        assert "192.168.7.20:8471" in added.stdout
    assert simpul_cli(node, "peer", "add", "[fd00::7]:8471").returncode == 0
    for bad in ("192.168.7.20", ":8471", "host:99999"):
        refused = simpul_cli(node, "peer", "add", bad)
        assert refused.returncode != 0 and "HOST:PORT" in refused.stderr, bad
    listed = simpul_cli(node, "peers", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["address"], r["source"], r["state"], r["node_id"]) for r in rows] == [
        ("192.168.7.20:8471", "manual", "added", None),
        ("[fd00::7]:8471", "manual", "added", None),
    ]
    text = simpul_cli(node, "peers").stdout.splitlines()
    assert len(text) == 2 and all(line.startswith("? ") for line in text)
    assert "192.168.7.20:8471" in text[0] and "seen -" in text[0]


async def test_status_lists_peers(api: Api, tmp_path: Path) -> None:
    assert simpul_cli(tmp_path / "node", "peer", "add", "10.9.9.9:8471").returncode == 0
    status, body = await api.call("GET", "/api/v1/status")
    assert status == 200
    assert [p["address"] for p in body["peers"]] == ["10.9.9.9:8471"]


def test_txt_record_holds_only_version_network_and_node(table: PeerTable) -> None:
    discovery = Discovery(NODE_A, lambda: NET, 8471, table)
    info = discovery.service_info(NET, ["10.1.1.1"])
    assert info.properties == {b"v": b"1", b"net": NET.encode(), b"node": NODE_A.encode()}
    assert (info.name, info.port) == (f"{NODE_A}._simpul._tcp.local.", 8471)
    bare = discovery.service_info("", ["10.1.1.1"])
    assert bare.properties == {b"v": b"1", b"net": b"", b"node": NODE_A.encode()}


def test_announcements_that_are_not_ours_are_refused() -> None:
    def info(**txt: str) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            SERVICE_TYPE, f"{NODE_B}.{SERVICE_TYPE}", port=8471,
            addresses=[socket.inet_aton("10.1.1.2")],
            properties={"v": "1", "net": NET, "node": NODE_B, **txt},
        )  # fmt: skip

    heard = parse_announcement(info(), [])
    assert heard == Announcement(NODE_B, NET, "10.1.1.2", 8471)
    for bad in ({"v": "2"}, {"node": "xyz"}, {"node": NODE_B.upper()}, {"net": "00"}):
        with pytest.raises(InvalidAnnouncement):
            parse_announcement(info(**bad), [])


async def test_only_peers_of_our_network_are_sync_candidates(
    table: PeerTable, caplog: pytest.LogCaptureFixture
) -> None:
    candidates: list[Peer] = []
    discovery = Discovery(NODE_A, lambda: NET, 8471, table, on_peer=candidates.append)
    caplog.set_level(logging.INFO, logger="simpul.node.discovery")
    assert await discovery.record(Announcement(NODE_A, NET, "10.1.1.1", 8471)) is None
    for _ in range(3):
        await discovery.record(Announcement(NODE_B, NET, "10.1.1.2", 8471))
        await discovery.record(Announcement(NODE_C, OTHER_NET, "10.1.1.3", 8471))
    assert [p.node_id for p in candidates] == [NODE_B] * 3
    states = {p.node_id: p.state for p in await table.list_all()}
    assert states == {NODE_B: DISCOVERED, NODE_C: FOREIGN}
    foreign = [r for r in caplog.records if "peer foreign network" in r.getMessage()]
    assert len(foreign) == 1 and foreign[0].levelno == logging.WARNING
    assert f"node_id={NODE_C} network_id={OTHER_NET} address=10.1.1.3:8471" in (
        foreign[0].getMessage()
    )


# ----- real nodes on a namespace LAN ----------------------------------------------------------


@dataclass
class LanNode:
    """`simpul node` running on one host of the LAN, with its stderr kept."""

    data_dir: Path
    node_id: str
    db: Database
    log: list[str] = field(default_factory=list)
    logged: asyncio.Event = field(default_factory=asyncio.Event)

    async def peers(self) -> dict[str, Peer]:
        return {p.node_id: p for p in await PeerTable(self.db).list_all() if p.node_id}

    async def wait_log(self, text: str, count: int = 1) -> None:
        async def enough() -> bool:
            return sum(text in line for line in self.log) >= count

        await wait_until(enough, f"{text!r} x{count} in the log of {self.node_id}")


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `condition` every 0.2 s; fail after WAIT_SECONDS naming `what`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while not await condition():
        assert loop.time() < deadline, f"timed out after {WAIT_SECONDS} s waiting for {what}"
        await asyncio.sleep(0.2)


@pytest.fixture
async def start_nodes(
    tmp_path: Path, networks: Networks
) -> AsyncIterator[Callable[[Lan, list[Path]], Awaitable[list[LanNode]]]]:
    """Start node i of the list on host i of the LAN, on copies of the given data dirs."""
    opened: list[LanNode] = []
    readers: list[asyncio.Task[None]] = []

    async def start(net: Lan, templates: list[Path]) -> list[LanNode]:
        env = {k: v for k, v in os.environ.items() if k != DISCOVERY_ENV}
        for i, template in enumerate(templates):
            data_dir = tmp_path / f"host{i}-{template.name}"
            shutil.copytree(template, data_dir)
            node_id = NodeKey.load(data_dir / "node.key").node_id_hex
            node = LanNode(data_dir, node_id, await Database.open(data_dir / "simpul.db"))
            opened.append(node)
            process = await net.spawn(
                i,
                [sys.executable, "-m", "simpul.node", "--data-dir", str(data_dir), "node",
                 "--listen", "127.0.0.1:8470"],
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            readers.append(asyncio.create_task(keep_lines(process.stderr, node.log)))
        return opened[-len(templates) :]

    yield start
    for task in readers:
        task.cancel()
    for node in opened:
        await node.db.close()


async def keep_lines(stream: asyncio.StreamReader | None, into: list[str]) -> None:
    assert stream is not None
    while line := await stream.readline():
        into.append(line.decode(errors="replace"))


async def sees(
    node: LanNode, others: list[LanNode], states: tuple[str, ...] = (DISCOVERED, SYNCED)
) -> bool:
    """Every one of `others` is in `node`'s peer table in one of `states` (a peer of our
    network may already be synced with by the time the table is read)."""
    known = await node.peers()
    return all(o.node_id in known and known[o.node_id].state in states for o in others)


@pytest.mark.netns
async def test_three_nodes_of_one_network_find_each_other(
    lan: Callable[[int], Lan], networks: Networks, start_nodes
) -> None:
    net = lan(3)
    nodes = await start_nodes(net, networks.office)
    for node in nodes:
        others = [o for o in nodes if o is not node]
        await wait_until(lambda n=node, o=others: sees(n, o), f"{node.node_id} to see {others}")
    listed = simpul_cli(nodes[0].data_dir, "peers", "--json")
    rows = {r["node_id"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {nodes[1].node_id, nodes[2].node_id}
    for i in (1, 2):
        row = rows[nodes[i].node_id]
        assert (row["host"], row["port"]) == (net.hosts[i].address, SYNC_PORT)
        assert (row["source"], row["network_id"]) == ("mdns", networks.network_id)
        assert row["first_seen_ms"] <= row["last_seen_ms"]


@pytest.mark.netns
async def test_node_of_another_network_is_foreign_and_announces_only_ids(
    lan: Callable[[int], Lan], networks: Networks, start_nodes
) -> None:
    net = lan(3)
    ours, theirs = await start_nodes(net, [networks.office[0], networks.foreign])
    observer = await net.spawn(
        2, [sys.executable, "-c", OBSERVER, net.hosts[2].address],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await wait_until(lambda: sees(ours, [theirs], (FOREIGN,)), "our node to mark theirs foreign")
    await wait_until(lambda: sees(theirs, [ours], (FOREIGN,)), "their node to mark ours foreign")
    assert observer.stdout is not None
    announced: dict[str, dict] = {}
    while len(announced) < 2:
        line = await asyncio.wait_for(observer.stdout.readline(), timeout=WAIT_SECONDS)
        service = json.loads(line)
        announced[service["txt"]["node"]] = service
    for node, network_id in ((ours, networks.network_id), (theirs, networks.foreign_network_id)):
        service = announced[node.node_id]
        assert service["txt"] == {"v": "1", "net": network_id, "node": node.node_id}
        assert (service["name"], service["port"]) == (
            f"{node.node_id}._simpul._tcp.local.", SYNC_PORT,
        )  # fmt: skip
    await ours.wait_log("peer foreign network")
    warning = [line for line in ours.log if "peer foreign network" in line]
    assert len(warning) == 1 and "WARNING" in warning[0]
    assert f"node_id={theirs.node_id} network_id={networks.foreign_network_id}" in warning[0]
    assert f"address={net.hosts[1].address}:{SYNC_PORT}" in warning[0]


@pytest.mark.netns
async def test_node_is_heard_again_after_its_link_comes_back(
    lan: Callable[[int], Lan], networks: Networks, start_nodes
) -> None:
    net = lan(2)
    steady, flapping = await start_nodes(net, networks.office[:2])
    await wait_until(lambda: sees(steady, [flapping]), "first discovery")
    await wait_until(lambda: sees(flapping, [steady]), "first discovery back")
    net.link_down(1)
    await flapping.wait_log("discovery idle reason=no-interface")
    net.link_up(1)
    back = now_ms()

    async def heard_since(node: LanNode, other: LanNode) -> bool:
        seen = (await node.peers())[other.node_id].last_seen_ms
        return seen is not None and seen >= back

    await wait_until(lambda: heard_since(steady, flapping), "the steady node to hear it again")
    await wait_until(lambda: heard_since(flapping, steady), "it to hear the steady node again")
    assert re.search(r"discovery announce .*addresses=" + re.escape(net.hosts[1].address),
                     "".join(flapping.log))  # fmt: skip


def test_an_interface_that_went_down_is_one_quiet_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_interface_errors()
    zeroconf_log = logging.getLogger("zeroconf")
    with caplog.at_level(logging.DEBUG, logger="zeroconf"):
        try:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        except OSError:
            zeroconf_log.warning("Error sending through socket %d", 7, exc_info=True)
        try:
            raise OSError(errno.EBADF, "Bad file descriptor")
        except OSError:
            zeroconf_log.warning("Error sending through socket %d", 8, exc_info=True)
    gone, other = [r for r in caplog.records if r.name == "zeroconf"]
    assert gone.levelno == logging.INFO and gone.exc_info is None
    assert gone.getMessage() == (
        "discovery send failed reason=Network is unreachable (an interface went down)"
    )
    assert other.exc_info is not None  # anything else keeps its traceback


def test_a_socket_error_of_zeroconf_is_one_line_without_traceback(
    table: PeerTable, caplog: pytest.LogCaptureFixture
) -> None:
    """An interface that goes down makes zeroconf's sockets fail; zeroconf logs that with a
    traceback (once per socket, so at every flap): a node logs one line instead."""
    Discovery(NODE_A, lambda: NET, SYNC_PORT, table)
    unreachable = OSError(101, "Network is unreachable")
    with caplog.at_level(logging.INFO, logger="zeroconf"):
        QuietLogger.log_exception_once(
            unreachable, "Error with socket 14 (('10.213.90.2', 5353))): %s", unreachable
        )
    (record,) = [r for r in caplog.records if r.name == "zeroconf"]
    assert record.exc_info is None and record.levelno == logging.INFO
    assert "Traceback" not in caplog.text and len(caplog.text.strip().splitlines()) == 1
    assert record.getMessage() == (
        "discovery send failed reason=Network is unreachable (an interface went down)"
    )
