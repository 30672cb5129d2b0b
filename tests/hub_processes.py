"""Test helpers: admit a hub to a network from the command line, and run `simpul hub`."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import simpul_cli
from test_network_cli import PASSPHRASE

Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


def admit_hub(admin: Path, hub_dir: Path, tmp: Path, scope: str = "1709") -> None:
    """The hub joins the admin's network as `simpul hub trust` documents it."""
    request, grant = tmp / "hub.req", tmp / "hub.grant"
    assert simpul_cli(hub_dir, "enroll", "request", "--out", str(request)).returncode == 0
    admitted = simpul_cli(
        admin, "network", "admit", str(request), "--role", "hub", "--scope", scope,
        "--out", str(grant), "--passphrase-stdin", stdin=PASSPHRASE,
    )  # fmt: skip
    assert admitted.returncode == 0, admitted.stderr
    root = admin / "network" / "root.cert.pem"
    trusted = simpul_cli(hub_dir, "hub", "trust", str(root), "--grant", str(grant))
    assert trusted.returncode == 0, trusted.stderr


@dataclass
class HubProcess:
    process: asyncio.subprocess.Process
    port: int
    status_port: int


async def start_hub(
    hub_dir: Path, listen: str, status_listen: str, log: Path, spawn: Spawn | None = None
) -> HubProcess:
    """`simpul hub` as its own process (through `spawn`, e.g. into a namespace)."""
    argv = [sys.executable, "-m", "simpul.node", "--data-dir", str(hub_dir), "hub",
            "--listen", listen, "--status-listen", status_listen]  # fmt: skip
    with log.open("wb") as stderr:
        if spawn is None:
            process = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=stderr
            )
        else:
            process = await spawn(argv, stdout=asyncio.subprocess.PIPE, stderr=stderr)
    assert process.stdout is not None
    ready = (await asyncio.wait_for(process.stdout.readline(), timeout=60)).decode()
    found = re.search(r"listening on \S+:(\d+) \(status on port (\d+)\)", ready)
    assert found, log.read_text()
    return HubProcess(process, int(found.group(1)), int(found.group(2)))


async def hub_status(status_port: int, spawn: Spawn | None = None) -> dict[str, Any]:
    """The running hub's status for its (first) network, read through `simpul hub status`."""
    argv = [sys.executable, "-m", "simpul.node", "hub", "status", "--json",
            "--url", f"http://127.0.0.1:{status_port}"]  # fmt: skip
    pipes = {"stdout": asyncio.subprocess.PIPE, "stderr": asyncio.subprocess.PIPE}
    if spawn is None:
        call = await asyncio.create_subprocess_exec(*argv, **pipes)  # type: ignore[arg-type]
    else:
        call = await spawn(argv, **pipes)
    out, err = await call.communicate()
    assert call.returncode == 0, err.decode()
    return json.loads(out)["networks"][0]


def uplink_of(data_dir: Path) -> dict[str, Any]:
    """The `uplink` part of `simpul status --json` of a node's data dir."""
    status = simpul_cli(data_dir, "status", "--json")
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)["uplink"]
