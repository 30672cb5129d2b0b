"""A pending entry of a record that the batch being written changed, retried while that
batch commits: the receiver must still find the record's document (a soak once answered a
LAN push with HTTP 500 from a KeyError in `_retry_pending`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import generate
from sync_peers import Peer, open_peers, sync_one_way

from simpul.sync.bundle import Checkpoint, Frame

COUNT = 1500  # records whose pending edits the retry reads back from the store


async def everything(peer: Peer) -> list[dict[str, Any]]:
    rows = await peer.db.fetchall("SELECT id FROM records ORDER BY id")
    return [await peer.records.get(row[0]) for row in rows]  # type: ignore[misc]


def edited(households: list[dict[str, Any]], dusun: str) -> list[tuple[int, dict[str, Any]]]:
    return [(i, {**h, "dusun": dusun}) for i, h in enumerate(households)]


def chunks(frames: list[Frame]) -> list[list[Frame]]:
    """The stream cut after each checkpoint (the opening frames go with the first)."""
    cut: list[list[Frame]] = [[]]
    for frame in frames:
        cut[-1].append(frame)
        if isinstance(frame, Checkpoint):
            cut.append([])
    return cut


async def test_a_pending_entry_retried_while_its_record_commits(tmp_path: Path) -> None:
    data = [json.loads(line) for line in generate(COUNT + 2, "jsonl").splitlines()]
    async with open_peers(tmp_path, 5) as (d, y, x, z, node):
        await d.records.import_batch(list(enumerate(data[:COUNT])), "d")
        await d.records.create(data[COUNT], "d")  # the record the batch being written holds
        await sync_one_way(d, y)
        await y.records.import_batch(edited(await everything(y), "Y"), "y")
        await sync_one_way(y, x)
        await x.records.import_batch(edited(await everything(x), "X"), "x")
        await z.records.create(data[COUNT + 1], "z")
        imported, created, _ = chunks(await d.frames_for(None))
        assert (await node.engine.ingest(imported)).accepted == COUNT
        x_only = [f for f in await x.frames_for(None) if getattr(f, "origin", x.origin) == x.origin]
        assert (await node.engine.ingest(x_only)).pending == COUNT + 1  # X's edits wait for Y's
        receiver = node.engine.receiver()
        await receiver.feed(created)  # its batch is written while the next frames apply
        await receiver.feed(await z.frames_for(None))  # applies, so the pending are retried
        report = await receiver.finish()
        assert (report.accepted, report.pending, report.refused) == (2, COUNT + 1, [])
        await sync_one_way(y, node)  # Y's edits: every waiting entry applies
        await sync_one_way(z, x)
        assert await node.state() == await x.state()
