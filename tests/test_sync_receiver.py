"""The pipelined receiver: batches applied ahead of their commit never overwrite what
another session or a local edit committed meanwhile, and nothing is stored twice."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from sync_peers import open_peers, sync_one_way
from test_sync_engine import household

from simpul.sync.bundle import Entries


async def test_two_sessions_delivering_the_same_feed_store_it_once(
    tmp_path: Path, households_jsonl
) -> None:
    async with open_peers(tmp_path, 2) as (a, b):
        await a.records.import_batch(
            [(i, household(households_jsonl, i)) for i in range(20)], "ani"
        )
        frames = await a.frames_for(b)
        first, second = b.engine.receiver(), b.engine.receiver()
        async with b.db.write():  # another writer holds the store while both apply
            await first.feed(frames)
            await second.feed(frames)
        one, two = await first.finish(), await second.finish()
        assert (one.accepted, one.skipped, one.refused) == (20, 0, [])
        # the second applied against a store that did not hold the feed yet: its batch is
        # checked in its transaction, found stale, and applied again (all already held)
        assert (two.accepted, two.skipped, two.refused) == (0, 20, [])
        assert await b.state() == await a.state()
        assert await b.records.verify_feeds(lambda *args: True) == {a.origin.hex(): 20}


async def test_a_local_edit_committed_before_the_batch_is_kept(
    tmp_path: Path, households_jsonl
) -> None:
    async with open_peers(tmp_path, 2) as (a, b):
        record = await a.records.create(household(households_jsonl, 0), "ani")
        await sync_one_way(a, b)
        await a.records.update(record["id"], lambda h: {**h, "dusun": "Baru"}, "ani")
        frames = await a.frames_for(b)
        receiver = b.engine.receiver()
        async with b.db.write():  # hold the store so the order of commits is known
            local = asyncio.create_task(
                b.records.update(record["id"], lambda h: {**h, "rt": "009"}, "budi")
            )
            await asyncio.sleep(0)  # the local edit queues for the store first
            await receiver.feed(frames)  # applied to the record without the local edit
        await local
        report = await receiver.finish()
        assert (report.accepted, report.applied, report.refused) == (1, 1, [])
        merged = await b.records.get(record["id"])
        assert merged is not None and (merged["dusun"], merged["rt"]) == ("Baru", "009")
        await sync_one_way(b, a)
        assert await a.state() == await b.state()


async def test_a_bad_chunk_is_refused_in_its_transaction_and_the_good_ones_kept(
    tmp_path: Path, households_jsonl
) -> None:
    async with open_peers(tmp_path, 2) as (a, b):
        kept = await a.records.create(household(households_jsonl, 0), "ani")
        lost = await a.records.create(household(households_jsonl, 1), "ani")
        frames = await a.frames_for(b)
        index = max(i for i, f in enumerate(frames) if isinstance(f, Entries))
        (rid, change), *rest = frames[index].items
        bad = replace(frames[index], items=((rid, change[:-1] + bytes([change[-1] ^ 1])), *rest))
        receiver = b.engine.receiver()
        # both chunks close in one call, so they share one batch: the fast pass cannot
        # verify the second, and the batch's transaction decides chunk by chunk
        await receiver.feed([*frames[:index], bad, *frames[index + 1 :]])
        report = await receiver.finish()
        assert (report.accepted, report.reasons()) == (1, {"chain": 1})
        assert await b.records.get(kept["id"]) is not None
        assert await b.records.get(lost["id"]) is None
        assert await b.records.verify_feeds(lambda *args: True) == {a.origin.hex(): 1}
