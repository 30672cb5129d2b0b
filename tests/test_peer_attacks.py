"""Attacks by a member of the network on a running node (issue 19), each against a real
`simpul node` process over real mutual TLS: a push right after the node's admin revoked the
sender, the node's own scheduler and a revoked peer, a flood of empty changes, and a push
whose hello names another node than its certificate.

The attacker is the enrolled village node ("desa") of `office_village`, played in-process
with its own data dir, key and certificate; the attacked node is the office ("kantor").
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from certified_peers import Network
from conftest import NodeProcess, make_token, simpul_cli, start_node_process
from test_lan_sync import eventually
from test_network_cli import PASSPHRASE

from simpul.crypto.tls import client_context
from simpul.node.membership import load_membership
from simpul.node.runtime import Node, open_node
from simpul.node.sync_session import PUSH
from simpul.node.trust_policy import network_engine
from simpul.sync.bundle import FORMAT_VERSION, HEADER, End, Entries, Hello, encode_frame
from simpul.sync.engine import SyncEngine
from simpul.sync.feed import Checkpoint
from simpul.sync.frontier import Frontier
from simpul.sync.receiver import MAX_BUFFERED_ENTRIES

MIB = 1024 * 1024
FLOOD_RSS_LIMIT = 200 * 1000 * 1000  # bytes (the acceptance says 200 MB)
HEALTHZ_LIMIT = 0.100  # seconds
VILLAGE = "1709012001"


@dataclass
class Member:
    """A member node played in-process: its store, sync engine and TLS client context."""

    node: Node
    engine: SyncEngine
    context: Any

    @property
    def node_id(self) -> bytes:
        return self.engine.local_origin

    async def add_household(self, household: dict[str, Any]) -> None:
        await self.node.records.create(household | {"kode_wilayah": VILLAGE}, "operator")

    async def push(self, target: NodeProcess, hello: Hello | None = None) -> tuple[int, str]:
        """POST every entry this node holds as a push, the first request of a connection
        (no pull before it), under `hello` or its own; the answer, or (0, why) when the
        connection was dropped before any answer (a refusal in the TLS handshake)."""
        stream = [HEADER, encode_frame(hello or self.engine.hello())]
        stream += [encode_frame(f) async for f in self.engine.outgoing_frames(Frontier())]
        stream.append(encode_frame(End()))
        url = f"https://127.0.0.1:{target.sync_port}{PUSH}"
        connector = aiohttp.TCPConnector(ssl=self.context)
        try:
            async with (
                aiohttp.ClientSession(connector=connector) as http,
                http.post(url, data=b"".join(stream)) as answer,
            ):
                return answer.status, (await answer.read()).decode(errors="replace")
        except aiohttp.ClientError as exc:
            return 0, str(exc)


@asynccontextmanager
async def member(data_dir: Path) -> AsyncIterator[Member]:
    membership = load_membership(data_dir)
    assert membership is not None
    async with open_node(data_dir) as node:
        engine, _ = network_engine(node, membership)
        context = client_context(
            node.key, membership.certificate.pem, membership.root_cert, membership.revocations
        )
        yield Member(node, engine, context)


def held_from(data_dir: Path, origin: bytes) -> int:
    """How far a node's store holds `origin`'s feed (read directly: WAL readers never block)."""
    with sqlite3.connect(f"file:{data_dir / 'simpul.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT max(seq) FROM entries WHERE origin = ?", (origin,)).fetchone()
    return row[0] or 0


def entries_held(data_dir: Path) -> int:
    with sqlite3.connect(f"file:{data_dir / 'simpul.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*) FROM entries").fetchone()[0]


def revoke(admin: Path, node_id: bytes) -> None:
    done = simpul_cli(
        admin, "network", "revoke", node_id.hex(), "--reason", "laptop hilang",
        "--passphrase-stdin", stdin=PASSPHRASE,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


async def healthy(node: NodeProcess) -> bool:
    async with aiohttp.ClientSession() as http, http.get(node.url + "/healthz") as response:
        return response.status == 200


async def test_revoked_node_push_right_after_revoke_is_refused(
    office_village: tuple[Path, Path], node_processes: list[NodeProcess], households_jsonl: list
) -> None:
    kantor, desa = office_village
    office = await start_node_process(kantor)
    node_processes.append(office)
    async with member(desa) as village:
        await village.add_household(households_jsonl[0])
        assert (await village.push(office))[0] == 200  # before the revocation: accepted
        accepted = held_from(kantor, village.node_id)
        assert accepted >= 1
        revoke(kantor, village.node_id)  # the CLI, while the office node runs
        await village.add_household(households_jsonl[1])
        status, answer = await village.push(office)
        assert held_from(kantor, village.node_id) == accepted, "the revoked node's push was kept"
        assert status == 0, f"not refused in the TLS handshake: {status} {answer}"
    assert await healthy(office)


async def test_running_session_of_a_node_revoked_meanwhile_is_cut(
    office_village: tuple[Path, Path], node_processes: list[NodeProcess], households_jsonl: list
) -> None:
    kantor, desa = office_village
    office = await start_node_process(kantor)
    node_processes.append(office)
    async with member(desa) as village:
        await village.add_household(households_jsonl[0])
        chunk = [encode_frame(f) async for f in village.engine.outgoing_frames(Frontier())]
        never = asyncio.Event()  # the push stays open until the node cuts it

        async def body() -> AsyncIterator[bytes]:
            yield HEADER + encode_frame(village.engine.hello()) + b"".join(chunk)
            await never.wait()

        async def push() -> None:
            connector = aiohttp.TCPConnector(ssl=village.context)
            url = f"https://127.0.0.1:{office.sync_port}{PUSH}"
            try:
                async with (
                    aiohttp.ClientSession(connector=connector) as http,
                    http.post(url, data=body()) as answer,
                ):
                    await answer.read()
            except aiohttp.ClientError:
                pass  # cut: the node closed the connection

        running = asyncio.create_task(push())

        async def committed() -> bool:  # the session is live: its first chunk is stored
            return held_from(kantor, village.node_id) >= 1

        await eventually(committed, "the office commits the chunk of the running push")
        revoke(kantor, village.node_id)
        try:
            async with asyncio.timeout(15):
                await running
        except TimeoutError:
            running.cancel()
            raise AssertionError("the revoked node's running session was not cut") from None
    assert await healthy(office)


def session_count(metrics: str, side: str) -> int:
    """LAN sessions of `side` that ended well, from a node's /metrics text."""
    wanted = ('carrier="lan"', f'side="{side}"', 'outcome="ok"')
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in metrics.splitlines()
        if line.startswith("simpul_sync_sessions_total{") and all(w in line for w in wanted)
    )


async def test_scheduler_starts_no_session_with_a_node_revoked_meanwhile(
    office_village: tuple[Path, Path], node_processes: list[NodeProcess], households_jsonl: list
) -> None:
    kantor, desa = office_village
    token = await make_token(kantor)
    village = await start_node_process(desa)
    # no periodic rounds during the test: the office syncs when it starts and on an edit
    office = await start_node_process(kantor, "--sync-period", "600")
    node_processes += [village, office]
    added = simpul_cli(kantor, "peer", "add", f"127.0.0.1:{village.sync_port}")
    assert added.returncode == 0, added.stderr
    village_id = json.loads(simpul_cli(desa, "status", "--json").stdout)["node_id"]

    def village_row() -> dict:
        rows = json.loads(simpul_cli(kantor, "peers", "--json").stdout)
        return next(r for r in rows if r["port"] == village.sync_port)

    async def served() -> int:
        async with aiohttp.ClientSession() as http, http.get(village.url + "/metrics") as answer:
            return session_count(await answer.text(), "server")

    async def synced_once() -> bool:
        return village_row()["node_id"] == village_id and await served() >= 1

    await eventually(synced_once, "the office syncs with the village before the revocation")
    revoke(kantor, bytes.fromhex(village_id))
    before = await served()
    # an edit on the office: its scheduler runs a round with every peer
    async with aiohttp.ClientSession() as http:
        created = await http.post(
            office.url + "/api/v1/records",
            json=households_jsonl[0] | {"kode_wilayah": VILLAGE},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert created.status == 201, await created.text()

    async def skipped() -> bool:
        return "revoked" in (village_row()["last_error"] or "")

    await eventually(skipped, "the office's round passes the revoked village by", 30)
    assert await served() == before, "the office ran a session with the revoked village"
    assert village_row()["state"] == "failed"


def vm_rss(pid: int) -> int:
    """Resident memory of a process in bytes, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def empty_changes(
    origin: bytes, frames: int, per_frame: int, checkpoint_every: int
) -> Iterator[bytes]:
    """Entries frames of empty changes for one record: megabytes of entries per kilobyte;
    with `checkpoint_every`, a junk checkpoint after so many frames keeps the stream going."""
    record_id = os.urandom(16)
    for index in range(frames):
        items = ((record_id, b""),) * per_frame
        yield encode_frame(Entries(origin, 1 + index * per_frame, items))
        if checkpoint_every and (index + 1) % checkpoint_every == 0:
            seq = (index + 1) * per_frame
            yield encode_frame(Checkpoint(origin, seq, bytes(32), 1, bytes(64)))


@pytest.mark.parametrize(
    ("frames", "per_frame", "checkpoint_every"),
    [(6, 490_000, 0), (3000, 1000, 0), (1200, 1000, 40)],
    ids=["as-the-probe-sent-it", "frames-at-the-limit", "sustained-with-junk-checkpoints"],
)
async def test_empty_change_flood_keeps_memory_bounded_and_node_answering(
    office_village: tuple[Path, Path],
    node_processes: list[NodeProcess],
    frames: int,
    per_frame: int,
    checkpoint_every: int,
) -> None:
    kantor, desa = office_village
    office = await start_node_process(kantor)
    node_processes.append(office)
    held = entries_held(kantor)
    pid = office.process.pid
    rss: list[int] = [vm_rss(pid)]
    latencies: list[float] = []
    flood_done = asyncio.Event()
    watching = asyncio.Event()

    async def watch() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(office.url + "/healthz") as response:  # connect, warm up
                assert response.status == 200
            watching.set()
            while True:  # at least once, however short the flood
                started = time.monotonic()
                async with http.get(office.url + "/healthz") as response:
                    assert response.status == 200
                latencies.append(time.monotonic() - started)
                rss.append(vm_rss(pid))
                if rss[-1] >= FLOOD_RSS_LIMIT:
                    flood_done.set()  # failed already: spare the shared machine the rest
                if flood_done.is_set():
                    return
                await asyncio.sleep(0.02)

    async with member(desa) as village:
        # made before the clock starts: encoding them would stall this test's own loop
        flood = [HEADER + encode_frame(village.engine.hello())]
        flood += empty_changes(village.node_id, frames, per_frame, checkpoint_every)
        flood.append(encode_frame(End()))

        async def body() -> AsyncIterator[bytes]:
            for data in flood:
                if flood_done.is_set():
                    return
                yield data
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        await watching.wait()
        connector = aiohttp.TCPConnector(ssl=village.context)
        try:
            async with (
                aiohttp.ClientSession(connector=connector) as http,
                http.post(f"https://127.0.0.1:{office.sync_port}{PUSH}", data=body()) as answer,
            ):
                await answer.read()
        except aiohttp.ClientError:
            pass  # the node may end the stream before the attacker has finished sending
        finally:
            flood_done.set()
            await watcher
    rss.append(vm_rss(pid))
    assert max(rss) < FLOOD_RSS_LIMIT, f"RSS peaked at {max(rss) / MIB:.0f} MiB"
    assert max(latencies) < HEALTHZ_LIMIT, f"/healthz took up to {max(latencies) * 1000:.0f} ms"
    assert entries_held(kantor) == held  # nothing of the flood was stored
    assert await healthy(office)


async def test_receiver_bounds_entries_waiting_for_a_checkpoint(network: Network) -> None:
    """The receiver's own bound, for carriers that do not end the stream (a drive file):
    empty changes count as entries, not as zero bytes."""
    node = await network.node(["1709"])
    origin, frames = os.urandom(16), MAX_BUFFERED_ENTRIES // 1000 + 1
    receiver = node.engine.receiver()
    await receiver.feed(
        Entries(origin, 1 + i * 1000, ((bytes(16), b""),) * 1000) for i in range(frames)
    )
    report = await receiver.finish()
    assert report.reasons() == {"oversized": frames * 1000}
    assert report.accepted == 0


async def test_push_whose_hello_names_another_node_stores_nothing(
    office_village: tuple[Path, Path], node_processes: list[NodeProcess], households_jsonl: list
) -> None:
    kantor, desa = office_village
    office = await start_node_process(kantor)
    node_processes.append(office)
    office_id = bytes.fromhex(json.loads(simpul_cli(kantor, "status", "--json").stdout)["node_id"])
    held = entries_held(kantor)
    async with member(desa) as village:
        await village.add_household(households_jsonl[0])
        # the village's own, valid entries, under a hello that claims to be the office
        spoofed = Hello(FORMAT_VERSION, office_id, village.engine.network_id)
        status, text = await village.push(office, spoofed)
    assert entries_held(kantor) == held, "entries of a spoofed push were stored"
    assert status == 403, text
    assert "hello names node" in text
    assert await healthy(office)
