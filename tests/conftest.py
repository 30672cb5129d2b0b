"""Shared fixtures: synthetic households from ../shared, real node data dirs, real servers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from certified_peers import Network

from simpul.crypto.network_root import create_network
from simpul.node.runtime import open_node
from simpul.node.server import build_app

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
HOUSEHOLDS_PY = SHARED / "data" / "households.py"

pytest_plugins = ["enrolled_dirs"]  # data dirs of certified nodes, made once per session


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak", action="store_true", help="property tests run ten times their examples"
    )


def generate(count: int, fmt: str, seed: int = 13) -> str:
    """Output of the shared deterministic generator."""
    return subprocess.run(
        [
            sys.executable,
            str(HOUSEHOLDS_PY),
            "--count",
            str(count),
            "--format",
            fmt,
            "--seed",
            str(seed),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture(scope="session")
def households_jsonl() -> list[dict[str, Any]]:
    return [json.loads(line) for line in generate(60, "jsonl").splitlines()]


def simpul_cli(data_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run the installed `simpul` command as a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "simpul.node", "--data-dir", str(data_dir), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


async def make_token(data_dir: Path, username: str = "admin", role: str = "admin") -> str:
    async with open_node(data_dir) as node:
        if await node.operators.get(username) is None:
            await node.operators.add(username, role, "kata-sandi-rahasia")
        return await node.operators.create_token(username)


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[Network]:
    """A network root (scope 1709 and 1702) whose `node()` makes certified nodes."""
    net = Network(tmp_path, create_network("Dinsos Uji", ["1709", "1702"]))
    yield net
    await net.close()


@dataclass
class Api:
    """An HTTP client bound to one node's base URL and token."""

    session: aiohttp.ClientSession
    base: str
    token: str

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        async with self.session.request(
            method, self.base + path, headers=headers, **kwargs
        ) as response:
            body = await response.read()
            try:
                return response.status, json.loads(body)
            except ValueError:
                return response.status, body.decode(errors="replace")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    """A node served in-process on a real loopback port, with an admin token."""
    data_dir = tmp_path / "node"
    token = await make_token(data_dir)
    async with open_node(data_dir) as node:
        server = TestServer(build_app(node), host="127.0.0.1")
        await server.start_server()
        async with aiohttp.ClientSession() as session:
            yield Api(session, str(server.make_url("")).rstrip("/"), token)
        await server.close()


@dataclass
class NodeProcess:
    """`simpul node` running as its own OS process."""

    process: asyncio.subprocess.Process
    url: str
    sync_port: int | None = None

    def kill(self) -> None:
        self.process.kill()


async def spawn_node(
    data_dir: Path,
    *extra: str,
    env: Mapping[str, str] | None = None,
    wrapper: tuple[str, ...] = (),
) -> asyncio.subprocess.Process:
    """`simpul node` on a free loopback port (run through the `wrapper` script if given),
    its output piped, discovery off (no mDNS on the machine's own network); `env` adds to
    its environment (e.g. a fake clock)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *wrapper,
        "-m",
        "simpul.node",
        "--data-dir",
        str(data_dir),
        "node",
        "--listen",
        "127.0.0.1:0",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "SIMPUL_DISCOVERY": "off", **(env or {})},
    )


async def start_node_process(
    data_dir: Path, *extra: str, env: Mapping[str, str] | None = None
) -> NodeProcess:
    """Start `simpul node` and wait for the URL it prints. LAN sync listens on any free
    port, found in `sync_port` (None for a node without a network)."""
    process = await spawn_node(data_dir, "--sync-port", "0", *extra, env=env)
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
    text = line.decode().strip()
    found = re.search(r"(http://\S+?)/? \((?:LAN sync on port (\d+))?", text)
    assert found, f"node did not start: {text!r}"
    port = int(found.group(2)) if found.group(2) else None
    return NodeProcess(process, found.group(1), port)


@pytest.fixture
async def node_processes() -> AsyncIterator[list[NodeProcess]]:
    """Collects started node processes; kills and reaps any still running at the end."""
    started: list[NodeProcess] = []
    yield started
    for node in started:
        if node.process.returncode is None:
            node.kill()
        await node.process.wait()
