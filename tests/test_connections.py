"""A neighbour on the WiFi against both ports of a running node (`simpul node` as its own
process, on loopback): connections that send nothing or send their headers a byte at a
time are closed after a bounded time, no answer names the aiohttp or Python version, and
the database files are the owner's alone.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import aiohttp
from conftest import NodeProcess, make_token, start_node_process

from simpul.crypto.node_key import NodeKey
from simpul.crypto.tls import client_context
from simpul.node.http_guard import PAGE_IDLE_SECONDS
from simpul.node.lan_sync import HANDSHAKE_SECONDS
from simpul.node.membership import load_membership
from simpul.node.runtime import DB_FILE, KEY_FILE, open_node

SLACK = 10.0  # a loaded 2-core machine may fire a timer late


def host_port(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
    return host, int(port)


async def held_for(host: str, port: int, trickle: bytes, limit: float) -> float:
    """Seconds until the node closes a connection that sends `trickle` one byte a second
    (nothing at all if empty); fails if it is still open after `limit` seconds."""
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()

    async def dribble() -> None:
        for byte in trickle:
            writer.write(bytes([byte]))
            await asyncio.sleep(1)  # the attack itself: a header byte a second

    sender = asyncio.create_task(dribble())
    try:
        while await asyncio.wait_for(reader.read(4096), timeout=limit):
            pass  # the 408/400 the node may answer before closing
        return time.monotonic() - started
    finally:
        sender.cancel()
        writer.close()


async def test_idle_and_slow_header_connections_are_closed(
    office_village: tuple[Path, Path], node_processes: list[NodeProcess]
) -> None:
    office, _ = office_village
    node = await start_node_process(office)
    node_processes.append(node)
    assert node.sync_port is not None
    host, page_port = host_port(node.url)
    slow_headers = b"GET /masuk HTTP/1.1\r\nHost: x\r\n" + b"X-Pelan: " + b"a" * 200
    slow_hello = bytes.fromhex("16030100c8010000c40303") + b"\x00" * 200  # a ClientHello start
    page_limit = PAGE_IDLE_SECONDS + SLACK
    sync_limit = HANDSHAKE_SECONDS + SLACK
    held = await asyncio.gather(
        *(held_for(host, page_port, b"", page_limit) for _ in range(10)),
        held_for(host, page_port, slow_headers, page_limit),
        held_for(host, node.sync_port, b"", sync_limit),
        held_for(host, node.sync_port, slow_hello, sync_limit),
    )
    assert max(held[:11]) <= page_limit, held
    assert max(held[11:]) <= sync_limit, held
    async with aiohttp.ClientSession() as http, http.get(node.url + "/healthz") as answer:
        assert answer.status == 200  # and the node still serves


async def test_no_answer_names_aiohttp_or_python(
    office_village: tuple[Path, Path], node_processes: list[NodeProcess], tmp_path: Path
) -> None:
    office, village = office_village
    token = await make_token(office)
    node = await start_node_process(office)
    node_processes.append(node)
    servers = []
    async with aiohttp.ClientSession() as http:
        for path, headers in (
            ("/healthz", {}),
            ("/masuk", {}),
            ("/tidak-ada", {}),
            ("/api/v1/records", {}),
            ("/api/v1/records", {"Authorization": f"Bearer {token}"}),
        ):
            async with http.get(node.url + path, headers=headers) as answer:
                servers.append(answer.headers.get("Server", ""))
    membership = load_membership(village)
    assert membership is not None
    context = client_context(
        NodeKey.load_or_create(village / KEY_FILE),
        membership.certificate.pem,
        membership.root_cert,
        membership.revocations,
        private_dir=tmp_path,
    )
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http,
        http.get(f"https://127.0.0.1:{node.sync_port}/tidak-ada") as answer,
    ):
        servers.append(answer.headers.get("Server", ""))
    host, port = host_port(node.url)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"BUKAN HTTP\r\n\r\n")  # the parser's own 400
    head = (await reader.read(4096)).decode(errors="replace")
    writer.close()
    servers += [line.partition(":")[2].strip() for line in head.splitlines() if ":" in line]
    assert servers and all("aiohttp" not in s and "Python" not in s for s in servers), servers
    assert servers[0] == "Simpul"


async def test_database_files_are_the_owners_alone(tmp_path: Path, households_jsonl: list) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir(mode=0o700)
    database = data_dir / DB_FILE
    database.touch(mode=0o644)  # as an older Simpul left it
    os.chmod(database, 0o644)
    async with open_node(data_dir) as node:
        await node.records.create(households_jsonl[0], "ani")
        files = [database, *(data_dir / f"{DB_FILE}{s}" for s in ("-wal", "-shm"))]
        modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
    assert modes == {f.name: 0o600 for f in files}
    fresh = tmp_path / "fresh"
    async with open_node(fresh):
        assert stat.S_IMODE((fresh / DB_FILE).stat().st_mode) == 0o600
