"""A node whose disk fills up: a clear error, whole chunks kept, nothing half-written, and
it catches up once there is room. The small disk is a real tmpfs (needs root)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from certified_peers import Network
from conftest import generate, simpul_cli
from sync_peers import Peer
from test_sync_session import contexts, serving, trust_of
from usb_nodes import small_drive

from simpul.node.sync_session import CannotStore, SessionError, sync_with

HOUSEHOLDS = 200  # about 1 MB of store on the receiving side
SMALL = "640k"  # room for the empty store and part of them
IMPORTED = 2500  # CSV households, imported in batches of
IMPORT_BATCH = 1000


def grow(disk: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)


def households(count: int = HOUSEHOLDS) -> list[dict]:
    return [json.loads(line) for line in generate(count, "jsonl").splitlines()]


async def assert_whole(receiver: Peer, sender: Peer) -> int:
    """`receiver` holds a prefix of `sender`'s feed, each of its records exactly as the
    sender has it (one change per record here), and a sound file; how many it holds."""
    assert await receiver.db.fetchall("PRAGMA integrity_check") == [("ok",)]
    frontier, heads = await receiver.state()
    _, sender_heads = await sender.state()
    held = frontier.get(sender.origin, 0)
    (stored,) = await receiver.db.fetchone("SELECT count(*) FROM entries")
    assert stored == held == len(heads)
    assert all(sender_heads[record] == head for record, head in heads.items())
    assert (await receiver.engine.status()).pending == 0
    return held


async def test_a_pull_into_a_full_disk_keeps_whole_chunks_and_catches_up(
    tmp_path: Path, network: Network
) -> None:
    office = await network.node(["1709", "1702"])
    for household in households():
        await office.records.create(household, "ani")
    with small_drive(tmp_path / "small", SMALL) as disk:
        village = await network.node(["1709", "1702"], home=disk)
        _, client_ctx = contexts(network, village, tmp_path)
        async with serving(network, office, tmp_path) as (url, _):
            with pytest.raises(CannotStore, match="is full: this write was not saved"):
                await sync_with(village.engine, url, client_ctx, trust_of(network))
            held = await assert_whole(village, office)
            assert 0 < held < HOUSEHOLDS
            grow(disk)
            report = await sync_with(village.engine, url, client_ctx, trust_of(network))
        assert report.received == HOUSEHOLDS - held
        assert await village.state() == await office.state()


async def test_a_push_to_a_full_peer_is_refused_as_no_room_and_lands_later(
    tmp_path: Path, network: Network
) -> None:
    village = await network.node(["1709", "1702"])
    for household in households():
        await village.records.create(household, "budi")
    with small_drive(tmp_path / "small", SMALL) as disk:
        office = await network.node(["1709", "1702"], home=disk)
        _, client_ctx = contexts(network, village, tmp_path)
        async with serving(network, office, tmp_path) as (url, _):
            with pytest.raises(SessionError, match=r"507.*is full"):
                await sync_with(village.engine, url, client_ctx, trust_of(network))
            assert 0 < await assert_whole(office, village) < HOUSEHOLDS
            grow(disk)
            await sync_with(village.engine, url, client_ctx, trust_of(network))
        assert await office.state() == await village.state()


def stored_records(data_dir: Path) -> int:
    """How many records a node's file holds, after checking the file is sound."""
    with sqlite3.connect(f"file:{data_dir / 'simpul.db'}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return conn.execute("SELECT count(*) FROM records").fetchone()[0]


def test_import_onto_a_full_disk_is_one_clear_line_and_keeps_whole_batches(
    tmp_path: Path,
) -> None:
    csv = tmp_path / "households.csv"
    csv.write_text(generate(IMPORTED, "csv"), encoding="utf-8")
    with small_drive(tmp_path / "small", "6m") as disk:
        node = disk / "node"
        result = simpul_cli(node, "import", str(csv))
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: the disk holding"), lines
        kept = stored_records(node)
        assert kept % IMPORT_BATCH == 0 and kept < IMPORTED  # whole batches of 1,000 or none
        grow(disk)
        again = simpul_cli(node, "import", str(csv))
        assert again.returncode == 0, again.stderr
        assert stored_records(node) > kept
