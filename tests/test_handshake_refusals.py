"""Refused handshakes are seen: a client without a certificate, or with one from another
network's root, gets a log line and a counter on a real node process (`/metrics`) and on a
real hub process (`simpul hub status`). A probe that connects and leaves is no refusal."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import ssl
import sys
from pathlib import Path

import aiohttp
from conftest import NodeProcess
from enrolled_dirs import Networks
from hub_processes import admit_hub, hub_status, start_hub

from simpul.crypto.node_key import NodeKey
from simpul.crypto.tls import client_context
from simpul.node.hub_networks import server_name
from simpul.node.membership import load_membership

TIMEOUT = 30


def foreign_client(networks: Networks) -> ssl.SSLContext:
    """A node of another network: its own certificate, and it trusts the office's root."""
    stranger = load_membership(networks.foreign)
    office = load_membership(networks.office[0])
    assert stranger is not None and office is not None
    key = NodeKey.load(networks.foreign / "node.key")
    return client_context(key, stranger.certificate.pem, office.root_cert, None)


def bare_client() -> ssl.SSLContext:
    """A TLS 1.3 client with no certificate that trusts anything (a curious laptop)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def attempt(port: int, context: ssl.SSLContext, server_hostname: str | None) -> None:
    """One connection that must not get through: the server ends it in the handshake."""
    async with asyncio.timeout(TIMEOUT):
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname=server_hostname
            )
        except (ssl.SSLError, ConnectionError):
            return
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = await reader.read(1)
        except (ssl.SSLError, ConnectionError):
            answer = b""  # an alert, or the end
        writer.close()
        assert answer == b"", "the server let a refused client through"


async def probe(port: int) -> None:
    """What the uplink's reachability check does: connect, send nothing, leave."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()


async def refusals_logged(log: Path, text: str, count: int) -> list[str]:
    async with asyncio.timeout(TIMEOUT):
        while len(lines := [x for x in log.read_text().splitlines() if text in x]) < count:
            await asyncio.sleep(0.1)
    return lines


async def test_node_logs_and_counts_refused_handshakes(
    networks: Networks, tmp_path: Path, node_processes: list[NodeProcess]
) -> None:
    data_dir = shutil.copytree(networks.office[1], tmp_path / "node")
    log = tmp_path / "node.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "simpul.node", "--data-dir", str(data_dir), "node",
            "--listen", "127.0.0.1:0", "--sync-port", "0",
            stdout=asyncio.subprocess.PIPE, stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "SIMPUL_DISCOVERY": "off"},
        )  # fmt: skip
    assert process.stdout is not None
    ready = (await asyncio.wait_for(process.stdout.readline(), TIMEOUT)).decode()
    found = re.search(r"(http://\S+?)/? \(LAN sync on port (\d+)", ready)
    assert found, ready
    node = NodeProcess(process, found.group(1), int(found.group(2)))
    node_processes.append(node)
    assert node.sync_port is not None

    await probe(node.sync_port)
    await attempt(node.sync_port, bare_client(), None)
    await attempt(node.sync_port, foreign_client(networks), None)
    lines = await refusals_logged(log, "tls handshake refused carrier=lan", 2)
    assert "reason=no-certificate" in lines[0] and "reason=untrusted-certificate" in lines[1]

    async with aiohttp.ClientSession() as http, http.get(node.url + "/metrics") as answer:
        metrics = await answer.text()
    refused = 'simpul_tls_handshakes_refused_total{carrier="lan",reason="%s"} 1'
    assert refused % "no-certificate" in metrics
    assert refused % "untrusted-certificate" in metrics
    assert 'reason="protocol"' not in metrics  # the probe was no refusal


async def test_hub_logs_and_counts_refused_handshakes(networks: Networks, tmp_path: Path) -> None:
    admin = shutil.copytree(networks.office[0], tmp_path / "admin")
    hub_dir, log = tmp_path / "hub", tmp_path / "hub.log"
    admit_hub(admin, hub_dir, tmp_path)
    hub = await start_hub(hub_dir, "127.0.0.1:0", "127.0.0.1:0", log)
    try:
        name = server_name(networks.network_id)
        await probe(hub.port)
        await attempt(hub.port, bare_client(), name)
        await attempt(hub.port, foreign_client(networks), name)
        lines = await refusals_logged(log, "hub tls handshake refused", 2)
        assert all(f"network_id={networks.network_id}" in line for line in lines), lines
        facts = await hub_status(hub.status_port)
        assert facts["refusals"] == {"tls-no-certificate": 1, "tls-untrusted-certificate": 1}
    finally:
        hub.process.kill()
        await asyncio.wait_for(hub.process.wait(), TIMEOUT)
