"""Invariant 1: a node killed with SIGKILL loses nothing acknowledged and its feeds verify."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
from conftest import NodeProcess, generate, make_token, start_node_process

from simpul.crypto.node_key import verify_signature
from simpul.node.importer import BATCH_HOUSEHOLDS
from simpul.node.runtime import open_node

WORKERS = 8
KILL_AFTER_ACKS = 60


async def test_sigkill_during_api_burst_loses_no_acknowledged_write(
    tmp_path: Path, node_processes: list[NodeProcess]
) -> None:
    data = tmp_path / "node"
    token = await make_token(data)
    node = await start_node_process(data)
    node_processes.append(node)
    households = [json.loads(line) for line in generate(400, "jsonl").splitlines()]
    created: list[str] = []
    patched: dict[str, str] = {}
    headers = {"Authorization": f"Bearer {token}"}

    async def worker(session: aiohttp.ClientSession, mine: list[dict]) -> None:
        for household in mine:
            try:
                async with session.post(f"{node.url}/api/v1/records", json=household) as r:
                    if r.status != 201:
                        return
                created.append(household["id"])
                address = f"Jl. Tahan Banting No. {len(created)}"
                async with session.patch(
                    f"{node.url}/api/v1/records/{household['id']}", json={"alamat": address}
                ) as r:
                    if r.status == 200:
                        patched[household["id"]] = address
            except aiohttp.ClientError:
                return
            if len(created) >= KILL_AFTER_ACKS and node.process.returncode is None:
                node.kill()

    async with aiohttp.ClientSession(headers=headers) as session:
        await asyncio.wait_for(
            asyncio.gather(*(worker(session, households[i::WORKERS]) for i in range(WORKERS))),
            timeout=120,
        )
    assert await node.process.wait() == -9
    assert len(created) >= KILL_AFTER_ACKS and len(created) < len(households)

    async with open_node(data) as reopened:
        for record_id in created:
            record = await reopened.records.get(record_id)
            assert record is not None, f"acknowledged record {record_id} lost"
        for record_id, address in patched.items():
            assert (await reopened.records.get(record_id))["alamat"] == address
        verified = await reopened.records.verify_feeds(verify_signature)
        counts = await reopened.records.counts()
        assert verified == {reopened.node_id: counts["feed_length"]}


async def test_sigkill_during_import_keeps_committed_batches(tmp_path: Path) -> None:
    data = tmp_path / "node"
    csv_file = tmp_path / "h.csv"
    total = 3 * BATCH_HOUSEHOLDS
    csv_file.write_text(generate(total, "csv"), encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simpul.node",
        "--data-dir",
        str(data),
        "--log-level",
        "info",
        "import",
        str(csv_file),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(120):
            while b"import batch" not in (line := await process.stderr.readline()):
                assert line, "import ended before committing a batch"
    finally:
        process.kill()
        await process.wait()

    async with open_node(data) as reopened:
        counts = await reopened.records.counts()
        assert counts["records"] % BATCH_HOUSEHOLDS == 0
        assert BATCH_HOUSEHOLDS <= counts["records"] < total
        assert await reopened.records.verify_feeds(verify_signature) == {
            reopened.node_id: counts["feed_length"]
        }
        committed = counts["records"]

    rerun = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simpul.node",
        "--data-dir",
        str(data),
        "import",
        str(csv_file),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(rerun.communicate(), timeout=120)
    summary = json.loads(out)
    assert (summary["created"], summary["unchanged"]) == (total - committed, committed)
    async with open_node(data) as reopened:
        assert (await reopened.records.counts())["records"] == total
