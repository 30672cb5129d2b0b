"""Running nodes (separate OS processes) sync over mutual TLS on loopback via manual peers."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from conftest import NodeProcess, generate, make_token, simpul_cli, start_node_process
from enrolled_dirs import Networks
from test_network_cli import PASSPHRASE

from simpul.crypto.node_key import NodeKey
from simpul.crypto.revocation import RevocationList

SYNC_PERIOD = "2"
CONVERGE_SECONDS = 60


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, seconds: float = CONVERGE_SECONDS
) -> None:
    """Poll `check` until true; bounded by `seconds`."""
    async with asyncio.timeout(seconds):
        while not await check():
            await asyncio.sleep(0.2)
    assert await check(), what


class Client:
    def __init__(self, session: aiohttp.ClientSession, node: NodeProcess, token: str) -> None:
        self.session, self.node, self.headers = session, node, {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, **kwargs: object) -> dict:
        async with self.session.request(
            method, self.node.url + path, headers=self.headers, **kwargs
        ) as response:
            assert response.status < 300, await response.text()
            return await response.json()

    async def heads(self) -> dict[str, list[str]]:
        listing = await self.call("GET", "/api/v1/records?limit=500")
        return {r["id"]: r["_meta"]["heads"] for r in listing["items"]}


async def two_synced_nodes(pair: tuple[Path, Path]) -> tuple[Path, Path, str, str]:
    """The office that made the network and a village it enrolled (`office_village`),
    each with an admin token."""
    admin, desa = pair
    tokens = (await make_token(admin), await make_token(desa))
    return admin, desa, *tokens


async def test_two_nodes_converge_and_merge_concurrent_edits(
    office_village: tuple[Path, Path], node_processes: list[NodeProcess], households_jsonl: list
) -> None:
    admin, desa, admin_token, desa_token = await two_synced_nodes(office_village)
    a = await start_node_process(admin, "--sync-period", SYNC_PERIOD)
    b = await start_node_process(desa, "--sync-period", SYNC_PERIOD)
    node_processes += [a, b]
    assert a.sync_port and b.sync_port
    assert simpul_cli(admin, "peer", "add", f"127.0.0.1:{b.sync_port}").returncode == 0
    assert simpul_cli(desa, "peer", "add", f"127.0.0.1:{a.sync_port}").returncode == 0
    in_scope = [h for h in households_jsonl if h["kode_wilayah"].startswith("1709")]
    async with aiohttp.ClientSession() as http:
        on_a, on_b = Client(http, a, admin_token), Client(http, b, desa_token)
        for household in in_scope[:5]:
            await on_a.call("POST", "/api/v1/records", json=household)
        for household in in_scope[5:9]:
            await on_b.call("POST", "/api/v1/records", json=household)

        async def converged() -> bool:
            heads_a, heads_b = await on_a.heads(), await on_b.heads()
            return len(heads_a) == 9 and heads_a == heads_b

        await eventually(converged, "both nodes hold all nine households")
        shared = in_scope[0]["id"]
        await on_a.call("PATCH", f"/api/v1/records/{shared}", json={"desil": 1})
        await on_b.call("PATCH", f"/api/v1/records/{shared}", json={"alamat": "Jl. Rukun 7"})

        async def merged() -> bool:
            for client in (on_a, on_b):
                record = await client.call("GET", f"/api/v1/records/{shared}")
                if (record["desil"], record["alamat"]) != (1, "Jl. Rukun 7"):
                    return False
            return await converged()

        await eventually(merged, "concurrent edits to different fields merge on both nodes")
        rows = [
            peer
            for client in (on_a, on_b)
            for peer in (await client.call("GET", "/api/v1/status"))["peers"]
        ]
        assert [p["state"] for p in rows] == ["synced", "synced"]
        # entries are counted on the peer row of the side that received them (a manual row
        # counts sessions the other side started only once it has learnt the peer's id)
        assert all(p["node_id"] for p in rows)
        assert sum(p["entries_received"] for p in rows) >= 1
        # each side names the other as its certificate does (the enrolled node is "desa")
        assert all(p["name"] for p in rows) and "desa" in {p["name"] for p in rows}


def entries_held(data_dir: Path) -> int:
    """Entries committed in a node's store, read directly (WAL readers never block it)."""
    with sqlite3.connect(f"file:{data_dir / 'simpul.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*) FROM entries").fetchone()[0]


async def test_node_killed_mid_session_resumes_without_loss(
    tmp_path: Path, office_village: tuple[Path, Path], node_processes: list[NodeProcess]
) -> None:
    admin, desa, *_ = await two_synced_nodes(office_village)
    csv_file = tmp_path / "h.csv"
    csv_file.write_text(generate(8000, "csv"))
    assert simpul_cli(admin, "import", str(csv_file)).returncode == 0
    total = json.loads(simpul_cli(admin, "status", "--json").stdout)["entries"]
    b = await start_node_process(desa, "--sync-period", SYNC_PERIOD)
    node_processes.append(b)
    assert simpul_cli(admin, "peer", "add", f"127.0.0.1:{b.sync_port}").returncode == 0
    a = await start_node_process(admin, "--sync-period", SYNC_PERIOD)
    node_processes.append(a)

    async with asyncio.timeout(CONVERGE_SECONDS):
        while entries_held(desa) == 0:
            await asyncio.sleep(0.01)
    b.kill()
    await b.process.wait()
    partial = entries_held(desa)
    assert 0 < partial < total, "the session was not interrupted midway"
    assert simpul_cli(desa, "verify").returncode == 0
    b2 = await start_node_process(desa, "--sync-period", SYNC_PERIOD)
    node_processes.append(b2)
    # the admin node still knows the old sync port: point it at the new one
    assert simpul_cli(admin, "peer", "add", f"127.0.0.1:{b2.sync_port}").returncode == 0

    async def complete() -> bool:
        return entries_held(desa) == total

    await eventually(complete, "the village node holds every entry after resuming")
    facts = json.loads(simpul_cli(desa, "status", "--json").stdout)
    assert facts["records"] == total
    assert simpul_cli(desa, "verify").returncode == 0


def data_key_epochs(data_dir: Path) -> set[int]:
    keys = json.loads((data_dir / "network" / "data-keys.json").read_text())
    return {key["epoch"] for key in keys}


def revocation_number(data_dir: Path) -> int:
    return RevocationList.parse((data_dir / "network" / "revocations.crl.pem").read_bytes()).number


async def test_revocation_and_new_data_key_travel_with_sync(
    tmp_path: Path, networks: Networks, node_processes: list[NodeProcess], households_jsonl: list
) -> None:
    admin, kept, lost = (
        shutil.copytree(template, tmp_path / name)
        for template, name in zip(networks.office, ("admin", "kept", "lost"), strict=True)
    )
    lost_id = NodeKey.load(lost / "node.key").node_id_hex
    a, k, x = [
        await start_node_process(d, "--sync-period", SYNC_PERIOD) for d in (admin, kept, lost)
    ]
    node_processes += [a, k, x]
    # the lost laptop talks only to the kept node, which talks to the admin's
    simpul_cli(admin, "peer", "add", f"127.0.0.1:{k.sync_port}")
    simpul_cli(kept, "peer", "add", f"127.0.0.1:{a.sync_port}")
    simpul_cli(lost, "peer", "add", f"127.0.0.1:{k.sync_port}")
    revoked = simpul_cli(
        admin, "network", "revoke", lost_id, "--reason", "laptop hilang", "--passphrase-stdin",
        stdin=PASSPHRASE,
    )  # fmt: skip
    assert revoked.returncode == 0, revoked.stderr

    async def kept_node_learnt() -> bool:
        return revocation_number(kept) == 1 and data_key_epochs(kept) == {1, 2}

    await eventually(kept_node_learnt, "the kept node took the new list and its new data key")
    before = json.loads(simpul_cli(kept, "status", "--json").stdout)["entries"]
    token = await make_token(lost)
    async with aiohttp.ClientSession() as http:
        await Client(http, x, token).call(
            "POST", "/api/v1/records", json=households_jsonl[0] | {"kode_wilayah": "1709012001"}
        )

    async def lost_node_refused() -> bool:
        rows = json.loads(simpul_cli(lost, "peers", "--json").stdout)
        # refused in the TLS handshake (with TLS 1.3 the client learns it on its first read),
        # or, on a resumed TLS session, by the peer check right after it (decision 0025)
        refusals = ("Server disconnected", "peer certificate refused: revoked")
        errors = [r["last_error"] or "" for r in rows if r["state"] == "failed"]
        return any(refused in error for error in errors for refused in refusals)

    await eventually(lost_node_refused, "the kept node refuses the revoked laptop's sessions")
    assert json.loads(simpul_cli(kept, "status", "--json").stdout)["entries"] == before
    assert data_key_epochs(lost) == {1}
