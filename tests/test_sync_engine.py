"""Sync engine: nodes converge, and bad, replayed, out-of-scope or early entries are handled."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

from sync_peers import open_peers, sync_both_ways, sync_one_way

from simpul.sync.bundle import BundleDecoder, Certificate, Checkpoint, Entries, Frame
from simpul.sync.engine import OpenTrust
from simpul.sync.frontier import Frontier


def household(data: list[dict[str, Any]], index: int, kode: str | None = None) -> dict:
    h = copy.deepcopy(data[index])
    h.pop("id")
    if kode:
        h["kode_wilayah"] = kode
    return h


def only_origin(frames: list[Frame], origin: bytes, keep: bool = True) -> list[Frame]:
    """The frames of `origin` (keep) or of every other origin (not keep)."""
    return [f for f in frames if (getattr(f, "origin", origin) == origin) == keep]


async def test_two_nodes_converge_and_a_noop_sync_sends_nothing(
    tmp_path: Path, households_jsonl
) -> None:
    async with open_peers(tmp_path, 2) as (a, b):
        r1 = await a.records.create(household(households_jsonl, 0), "ani")
        r2 = await b.records.create(household(households_jsonl, 1), "budi")
        await sync_both_ways(a, b)
        await a.records.update(r2["id"], lambda h: {**h, "dusun": "Baru"}, "ani")
        await b.records.update(r1["id"], lambda h: {**h, "desil": 1}, "budi")
        await b.records.update(r2["id"], lambda h: {**h, "rt": "009"}, "budi")
        await sync_both_ways(a, b)
        assert await a.state() == await b.state()
        merged = await b.records.get(r2["id"])
        assert merged is not None and (merged["dusun"], merged["rt"]) == ("Baru", "009")
        assert await a.records.search(q="DEDI") == await b.records.search(q="DEDI")
        assert await b.records.verify_feeds(lambda *args: True) == {
            a.origin.hex(): 2,
            b.origin.hex(): 3,
        }
        frames = await a.frames_for(b)
        assert [type(f).__name__ for f in frames] == ["Hello", "End"]


async def test_redelivery_changes_nothing(tmp_path: Path, households_jsonl) -> None:
    async with open_peers(tmp_path, 2) as (a, b):
        batch = [(i, household(households_jsonl, i)) for i in range(5)]
        await a.records.import_batch(batch, "ani")
        frames = await a.frames_for(b)
        first = await b.engine.ingest(frames)
        assert (first.accepted, first.applied, first.skipped, first.refused) == (5, 5, 0, [])
        state = await b.state()
        again = await b.engine.ingest(frames)
        assert (again.accepted, again.skipped, again.refused) == (0, 5, [])
        assert await b.state() == state == await a.state()
        own = await a.engine.ingest(frames)
        assert (own.accepted, own.skipped) == (0, 5)


async def test_three_nodes_forward_each_others_feeds(tmp_path: Path, households_jsonl) -> None:
    async with open_peers(tmp_path, 3) as (a, b, c):
        rec = await a.records.create(household(households_jsonl, 0), "ani")
        await sync_one_way(a, b)
        members = rec["anggota"]
        await b.records.update(rec["id"], lambda h: {**h, "anggota": members[1:]}, "budi")
        await c.records.create(household(households_jsonl, 2), "cici")
        report = await sync_one_way(b, c)
        assert report.frontier == {a.origin: 1, b.origin: 1, c.origin: 1}
        await c.records.update(rec["id"], lambda h: {**h, "status_usulan": "diusulkan"}, "cici")
        for x, y in [(a, b), (b, c), (c, a), (a, b)]:
            await sync_both_ways(x, y)
        states = [await p.state() for p in (a, b, c)]
        assert states[0] == states[1] == states[2]
        final = await a.records.get(rec["id"])
        assert final is not None and final["anggota"] == members[1:]
        assert final["status_usulan"] == "diusulkan"


async def test_tampered_chunk_is_refused_whole(tmp_path: Path, households_jsonl) -> None:
    async with open_peers(tmp_path, 2) as (a, b):
        await a.records.import_batch([(i, household(households_jsonl, i)) for i in range(3)], "a")
        frames = await a.frames_for(b)
        index = next(i for i, f in enumerate(frames) if isinstance(f, Entries))
        chunk = frames[index]
        assert isinstance(chunk, Entries)
        items = list(chunk.items)
        items[1] = (bytes(16), items[1][1])  # the second entry claims another record
        tampered = [*frames[:index], replace(chunk, items=tuple(items)), *frames[index + 1 :]]
        report = await b.engine.ingest(tampered)
        assert report.accepted == 0 and report.reasons() == {"chain": 3}
        assert "chain hash does not match" in report.refused[0].detail
        assert await b.state() == (Frontier(), {})
        assert (await b.records.counts())["entries"] == 0
        forged = [f if not isinstance(f, Checkpoint) else replace(f, at_ms=1) for f in frames]
        assert (await b.engine.ingest(forged)).reasons() == {"chain": 3}
        assert (await b.engine.ingest(frames)).accepted == 3


async def test_untrusted_or_unannounced_origins_are_refused(
    tmp_path: Path, households_jsonl
) -> None:
    async with open_peers(tmp_path, 2) as (a, b):
        await a.records.create(household(households_jsonl, 0), "ani")
        frames = await a.frames_for(b)
        no_cert = [f for f in frames if not isinstance(f, Certificate)]
        assert (await b.engine.ingest(no_cert)).reasons() == {"untrusted": 1}
        wrong_key = [
            replace(f, public_key=b.key.public_bytes) if isinstance(f, Certificate) else f
            for f in frames
        ]
        report = await b.engine.ingest(wrong_key)
        assert report.reasons() == {"untrusted": 1}
        assert "does not belong" in report.refused[0].detail
        uncovered = [f for f in frames if not isinstance(f, Checkpoint)]
        assert (await b.engine.ingest(uncovered)).reasons() == {"uncovered": 1}
        assert await b.engine.frontier() == {}


class ScopedTrust(OpenTrust):
    """Every origin may write region codes under `prefix`; checkpoints after `cutoff` refused."""

    def __init__(self, prefix: str, cutoff_ms: int | None = None) -> None:
        self.prefix = prefix
        self.cutoff_ms = cutoff_ms

    def may_write(self, origin: bytes, kode_wilayah: str) -> bool:
        return kode_wilayah.startswith(self.prefix)

    def accepts_checkpoint(self, origin: bytes, at_ms: int) -> bool:
        return self.cutoff_ms is None or at_ms <= self.cutoff_ms


async def test_an_out_of_scope_entry_is_held_and_the_rest_of_its_chain_applies(
    tmp_path: Path, households_jsonl
) -> None:
    async with open_peers(tmp_path, 2) as (a, _):
        inside = await a.records.create(household(households_jsonl, 0, "1709052009"), "ani")
        await a.records.update(inside["id"], lambda h: {**h, "kode_wilayah": "3201010001"}, "ani")
        later = await a.records.create(household(households_jsonl, 1, "1709052009"), "ani")
        frames = await a.frames_for(None)  # a's whole feed
    async with open_peers(tmp_path / "scoped", 1, ScopedTrust("1709")) as (b,):
        report = await b.engine.ingest(frames)
        assert (report.accepted, report.applied, report.reasons()) == (3, 2, {"scope": 1})
        (refused,) = report.refused
        assert refused.held and refused.seq == 2 and "3201010001" in refused.detail
        assert report.frontier == {a.origin: 3}
        stored = await b.records.get(inside["id"])
        assert stored is not None and stored["kode_wilayah"] == "1709052009"
        assert await b.records.get(later["id"]) is not None
        # held, not lost: the entry stays in the feed (and is forwarded), and a replay is a no-op
        again = await b.engine.ingest(frames)
        assert (again.accepted, again.skipped, again.refused) == (0, 3, [])


async def test_an_edit_that_depends_on_a_held_change_is_held_too(
    tmp_path: Path, households_jsonl
) -> None:
    async with open_peers(tmp_path, 1) as (a,):
        rec = await a.records.create(household(households_jsonl, 0, "1709052009"), "ani")
        await a.records.update(rec["id"], lambda h: {**h, "kode_wilayah": "3201010001"}, "ani")
        await a.records.update(rec["id"], lambda h: {**h, "dusun": "Baru"}, "ani")
        frames = await a.frames_for(None)
    chunks = [i for i, f in enumerate(frames) if isinstance(f, Checkpoint)]
    async with open_peers(tmp_path / "scoped", 2, ScopedTrust("1709")) as (b, c):
        # in one stream
        report = await b.engine.ingest(frames)
        assert report.reasons() == {"scope": 1, "depends": 1} and report.pending == 0
        # the dependent edit in a later stream
        assert (await c.engine.ingest(frames[: chunks[1] + 1])).reasons() == {"scope": 1}
        report = await c.engine.ingest(frames)
        assert report.reasons() == {"depends": 1} and report.pending == 0
        for peer in (b, c):
            assert await peer.engine.frontier() == {a.origin: 3}
            stored = await peer.records.get(rec["id"])
            assert stored is not None and stored["dusun"] == households_jsonl[0]["dusun"]


async def test_one_out_of_scope_household_is_held_and_its_chunk_applies(
    tmp_path: Path, households_jsonl
) -> None:
    async with open_peers(tmp_path, 1) as (a,):
        batch = [(0, household(households_jsonl, 0, "1709052009"))]
        batch.append((1, household(households_jsonl, 1, "3201010001")))
        await a.records.import_batch(batch, "ani")
        frames = await a.frames_for(None)
    async with open_peers(tmp_path / "scoped", 1, ScopedTrust("1709")) as (b,):
        report = await b.engine.ingest(frames)
        assert report.reasons() == {"scope": 1} and report.accepted == 2
        assert report.applied == 1 and report.frontier == {a.origin: 2}


async def test_checkpoints_after_revocation_are_refused(tmp_path: Path, households_jsonl) -> None:
    async with open_peers(tmp_path, 1) as (a,):
        rec = await a.records.create(household(households_jsonl, 0), "ani")
        frames = await a.frames_for(None)
    cutoff = next(f.at_ms for f in frames if isinstance(f, Checkpoint)) - 1
    async with open_peers(tmp_path / "revoking", 1, ScopedTrust("", cutoff)) as (b,):
        report = await b.engine.ingest(frames)
        assert report.reasons() == {"revoked": 1} and report.refused[0].held
        assert report.applied == 0 and await b.records.get(rec["id"]) is None


async def test_entries_before_their_deps_wait_and_are_forwarded(
    tmp_path: Path, households_jsonl
) -> None:
    async with open_peers(tmp_path, 4) as (a, b, c, d):
        rec = await a.records.create(household(households_jsonl, 0), "ani")
        await sync_one_way(a, b)
        await b.records.update(rec["id"], lambda h: {**h, "desil": 2}, "budi")
        # c hears of b's edit before a's creation of the record
        report = await c.engine.ingest(only_origin(await b.frames_for(c), a.origin, keep=False))
        assert (report.accepted, report.applied, report.pending) == (1, 0, 1)
        assert await c.records.get(rec["id"]) is None
        assert report.frontier == {b.origin: 1}
        # c forwards the waiting entry to d, where it waits too
        assert (await sync_one_way(c, d)).pending == 1
        for peer in (c, d):
            report = await sync_one_way(a, peer)
            assert (report.accepted, report.applied, report.pending) == (1, 2, 0)
            stored = await peer.records.get(rec["id"])
            assert stored is not None and stored["desil"] == 2
        assert await c.state() == await d.state() == await b.state()


async def test_frames_in_any_slicing_and_split_chunks(tmp_path: Path, households_jsonl) -> None:
    async with open_peers(tmp_path, 3) as (a, b, c):
        await a.records.import_batch([(i, household(households_jsonl, i)) for i in range(4)], "a")
        await a.records.create(household(households_jsonl, 5), "ani")
        # entries split into one frame each, still committed per checkpoint
        split: list[Frame] = []
        for frame in await a.frames_for(b):
            if isinstance(frame, Entries):
                split += [
                    Entries(frame.origin, frame.first_seq + i, (item,))
                    for i, item in enumerate(frame.items)
                ]
            else:
                split.append(frame)
        assert (await b.engine.ingest(split)).accepted == 5
        # a stream decoded and received a few bytes at a time
        receiver = c.engine.receiver()
        decoder = BundleDecoder()
        data = await a.bundle_for(c)
        accepted = 0
        for start in range(0, len(data), 97):
            accepted += (await receiver.receive(decoder.feed(data[start : start + 97]))).accepted
        decoder.close()
        assert accepted == 5 and (await receiver.finish()).refused == []
        assert receiver.peer is not None and receiver.peer.node_id == a.origin
        assert await a.state() == await b.state() == await c.state()


async def test_gap_and_out_of_order_frames_are_refused(tmp_path: Path, households_jsonl) -> None:
    async with open_peers(tmp_path, 2) as (a, b):
        await a.records.create(household(households_jsonl, 0), "ani")
        await a.records.create(household(households_jsonl, 1), "ani")
        frames = await a.frames_for(b)
        chunks = [i for i, f in enumerate(frames) if isinstance(f, Entries)]
        without_first = frames[: chunks[0]] + frames[chunks[0] + 2 :]
        assert (await b.engine.ingest(without_first)).reasons() == {"gap": 1}
        swapped = [*frames[: chunks[0]], frames[chunks[1]], frames[chunks[0]]]
        assert (await b.engine.ingest(swapped)).reasons() == {"order": 2}
        assert await b.engine.frontier() == {}


async def test_large_transaction_spans_several_entries_frames(
    tmp_path: Path, households_jsonl
) -> None:
    count = 1200
    async with open_peers(tmp_path, 2) as (a, b):
        batch = [
            (i, {**household(households_jsonl, i % 60), "no_kk": f"{i:016d}"}) for i in range(count)
        ]
        await a.records.import_batch(batch, "ani")
        frames = await a.frames_for(b)
        assert [len(f.items) for f in frames if isinstance(f, Entries)] == [1000, 200]
        report = await b.engine.ingest(frames)
        assert (report.accepted, report.applied) == (count, count)
        assert await a.state() == await b.state()
