"""Convergence (invariant 2) as a property: random edits on 3-6 nodes and random syncs with
frames dropped, duplicated and reordered; after a full round of syncs every node holds the
same records (same Automerge heads) and the same frontier, and nothing is left pending."""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import tempfile
from pathlib import Path
from typing import Any

from conftest import generate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sync_peers import Peer, open_peers, sync_one_way

from simpul.sync.ids import new_member_id
from simpul.sync.store import RecordNotFound

EDITS = ("field", "member_add", "member_edit", "member_remove", "delete")
KINDS = ("create", "create", *EDITS, "sync", "sync", "sync", "sync")
FAULTS = ("none", "drop", "drop_origin", "duplicate", "reorder")

op = st.tuples(
    st.sampled_from(KINDS),
    st.integers(0, 5),  # node
    st.integers(0, 30),  # record slot, or the sync target
    st.integers(0, 30),  # member, value or frame index
    st.sampled_from(FAULTS),
    st.integers(0, 30),  # second frame index
)


def edited(kind: str, household: dict[str, Any], value: int) -> dict[str, Any]:
    members = [dict(m) for m in household.get("anggota", [])]
    if kind == "field":
        key = ("desil", "dusun", "status_usulan")[value % 3]
        return {**household, key: value if key == "desil" else f"{key}-{value}"}
    if kind == "member_add":
        person = {"id": new_member_id(), "nik": f"{value:016d}", "nama": f"ANGGOTA {value}"}
        members.append(person)
    elif members and kind == "member_edit":
        members[value % len(members)]["nama"] = f"NAMA {value}"
    elif members:
        del members[value % len(members)]
    return {**household, "anggota": members}


async def faulty_sync(source: Peer, target: Peer, fault: str, i: int, j: int) -> None:
    frames = await source.frames_for(target)
    if len(frames) > 2:
        i, j = 1 + i % (len(frames) - 1), 1 + j % (len(frames) - 1)
        if fault == "drop":
            del frames[i]
        elif fault == "drop_origin":  # every frame of one origin is lost
            lost = getattr(frames[i], "origin", None)
            frames = [f for f in frames if getattr(f, "origin", None) != lost]
        elif fault == "duplicate":
            frames.insert(j, frames[i])
        elif fault == "reorder":
            frames[i], frames[j] = frames[j], frames[i]
    await target.engine.ingest(frames)


@functools.cache
def households() -> list[dict[str, Any]]:
    return [json.loads(line) for line in generate(20, "jsonl").splitlines()]


async def scenario(count: int, ops: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with open_peers(Path(tmp), count) as peers:
            ids: list[str] = []
            for kind, node, slot, value, fault, other in ops:
                peer = peers[node % count]
                if kind == "sync":
                    target = peers[slot % count]
                    if target is not peer:
                        await faulty_sync(peer, target, fault, value, other)
                elif kind == "create":
                    household = copy.deepcopy(households()[slot % len(households())])
                    household.pop("id")
                    ids.append((await peer.records.create(household, f"op{node}"))["id"])
                elif ids:
                    rid = ids[slot % len(ids)]
                    try:
                        if kind == "delete":
                            await peer.records.update(rid, dict, f"op{node}", delete=True)
                        else:
                            await peer.records.update(
                                rid, functools.partial(edited, kind, value=value), f"op{node}"
                            )
                    except RecordNotFound:
                        pass  # not here yet, or deleted here
            # a full round: everyone to the first node, then the first node to everyone
            for other in peers[1:]:
                await sync_one_way(other, peers[0])
            for other in peers[1:]:
                await sync_one_way(peers[0], other)
            states = [await p.state() for p in peers]
            assert all(state == states[0] for state in states), "nodes did not converge"
            assert len(states[0][1]) == len(ids)
            for peer in peers:
                assert (await peer.engine.status()).pending == 0


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(count=st.integers(3, 6), ops=st.lists(op, min_size=4, max_size=20))
def test_random_edits_and_faulty_syncs_converge(count: int, ops: list) -> None:
    asyncio.run(scenario(count, ops))
