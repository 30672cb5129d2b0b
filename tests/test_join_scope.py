"""Issue #13's path: a node imports an office's households, then joins a network. Joining
with records outside the granted scope is refused with one clear line; with a scope wide
enough, the running node picks up its new network without a restart, both nodes converge
on the same heads and later edits keep arriving."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import aiohttp
from conftest import NodeProcess, generate, make_token, simpul_cli, start_node_process
from test_lan_sync import Client, eventually
from test_network_cli import PASSPHRASE

COUNT = 40  # the generator's villages of 1702 and 1709


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def imported(data_dir: Path, tmp_path: Path) -> None:
    csv = tmp_path / "kantor.csv"
    csv.write_text(generate(COUNT, "csv"))
    result = simpul_cli(data_dir, "import", str(csv))
    assert result.returncode == 0, result.stderr


def create(data_dir: Path, *scopes: str) -> subprocess.CompletedProcess:
    flags = [arg for scope in scopes for arg in ("--scope", scope)]
    return simpul_cli(
        data_dir, "network", "create", "--name", "Dinsos Uji", *flags, "--passphrase-stdin",
        stdin=PASSPHRASE,
    )  # fmt: skip


def test_joining_with_records_outside_the_scope_is_refused(tmp_path: Path) -> None:
    office = tmp_path / "kantor"
    imported(office, tmp_path)
    refused = create(office, "1709")
    assert refused.returncode != 0
    (line,) = refused.stderr.strip().splitlines()
    assert "holds 22 households (1702: 22) outside the scope 1709" in line
    assert "--scope" in line and "simpul export" in line and "Traceback" not in line
    assert not (office / "network" / "node.crt").exists()
    # the same check for a device that installs a grant
    admin = tmp_path / "admin"
    assert create(admin, "1709", "1702").returncode == 0
    village = tmp_path / "desa"
    imported(village, tmp_path)
    request, grant = tmp_path / "desa.req", tmp_path / "desa.grant"
    assert simpul_cli(village, "enroll", "request", "--out", str(request)).returncode == 0
    admitted = simpul_cli(
        admin, "network", "admit", str(request), "--scope", "1702", "--out", str(grant),
        "--passphrase-stdin", stdin=PASSPHRASE,
    )  # fmt: skip
    assert admitted.returncode == 0, admitted.stderr
    installed = simpul_cli(village, "enroll", "install", str(grant))
    assert installed.returncode != 0
    assert "holds 18 households (1709: 18) outside the scope 1702" in installed.stderr
    assert "simpul network admit" in installed.stderr


async def test_with_a_wide_scope_both_nodes_converge_and_edits_keep_arriving(
    tmp_path: Path, node_processes: list[NodeProcess]
) -> None:
    office, village = tmp_path / "kantor", tmp_path / "desa"
    imported(office, tmp_path)
    office_port = free_port()
    a = await start_node_process(office, "--sync-period", "2", "--sync-port", str(office_port))
    node_processes.append(a)
    assert a.sync_port is None  # no network yet
    created = create(office, "1709", "1702")  # while the office's node runs
    assert created.returncode == 0, created.stderr
    request, grant = tmp_path / "desa.req", tmp_path / "desa.grant"
    assert simpul_cli(village, "enroll", "request", "--out", str(request)).returncode == 0
    admitted = simpul_cli(
        office, "network", "admit", str(request), "--scope", "1709", "--scope", "1702",
        "--out", str(grant), "--passphrase-stdin", stdin=PASSPHRASE,
    )  # fmt: skip
    assert admitted.returncode == 0, admitted.stderr
    assert simpul_cli(village, "enroll", "install", str(grant)).returncode == 0
    tokens = await make_token(office), await make_token(village)
    b = await start_node_process(village, "--sync-period", "2")
    node_processes.append(b)
    # the running office node picked up its new network: its sync port answers the village
    assert simpul_cli(village, "peer", "add", f"127.0.0.1:{office_port}").returncode == 0
    async with aiohttp.ClientSession() as http:
        on_a, on_b = Client(http, a, tokens[0]), Client(http, b, tokens[1])

        async def converged() -> bool:
            heads_a, heads_b = await on_a.heads(), await on_b.heads()
            return len(heads_a) == COUNT and heads_a == heads_b

        await eventually(converged, "the village holds every household the office imported")
        first, second = sorted(await on_a.heads())[:2]
        await on_a.call("PATCH", f"/api/v1/records/{first}", json={"alamat": "Jl. Beton 1"})
        await on_b.call("PATCH", f"/api/v1/records/{second}", json={"alamat": "Jl. Asbes 2"})

        async def edits_arrived() -> bool:
            on_both = [
                (await c.call("GET", f"/api/v1/records/{rid}"))["alamat"]
                for c in (on_a, on_b)
                for rid in (first, second)
            ]
            return on_both == ["Jl. Beton 1", "Jl. Asbes 2"] * 2 and await converged()

        await eventually(edits_arrived, "later edits on either side arrive on the other")
        for client in (on_a, on_b):
            status = await client.call("GET", "/api/v1/status")
            assert all(p["state"] == "synced" for p in status["peers"]), status["peers"]
