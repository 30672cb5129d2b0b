"""Convergence with refusals, model-based (issue #13; invariants 2, 4 and 6).

A hypothesis state machine drives three certified office nodes and a hub (a fourth node
that relays, as the district hub does) of one network: households created and edited
(also outside a node's write scope, as a node that imported before joining would), the
same field edited on two nodes at once, a revocation learnt by some nodes only, and
bundles delivered over the LAN (frames lost, duplicated or reordered), on a USB drive
file (sealed, sometimes pulled mid-write) and through the hub. After healing (everyone
learns the news, then full rounds of sync), every pair of nodes holds the same heads for
every record, or the difference is an explicit refusal: the node that lacks a change
holds a refused entry of that record and says so in its refusal summary. Never a silent
difference, and nothing applicable is left pending.

`--soak` runs ten times the examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from certified_peers import Network
from conftest import generate
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule
from sync_peers import Peer, sync_one_way

from simpul.crypto.network_root import create_network
from simpul.crypto.revocation import issue_revocation_list
from simpul.node.trust_policy import CertificateTrust
from simpul.sync.bundle import Frame
from simpul.sync.drive_file import BytesSource, DriveFileReader, build_drive_file, parse_drive_file
from simpul.sync.frontier import Frontier
from simpul.sync.ids import record_id_text
from simpul.sync.record_doc import RecordDoc
from simpul.sync.refusals import refusal_summary
from simpul.sync.store import RecordNotFound

# enrolment gave each node its own scope; region codes in and out of them
SCOPES = (["1709"], ["1709", "1702"], ["1709042001"])
REGIONS = ("1709042001", "1709052009", "1702032007")
FAULTS = ("none", "none", "drop", "duplicate", "reorder")
PATHS = ("lan", "lan", "usb", "hub")
EXAMPLES = 200
HEAL_ROUNDS = 4


@functools.cache
def households() -> list[dict[str, Any]]:
    return [json.loads(line) for line in generate(12, "jsonl").splitlines()]


@functools.cache
def root() -> Any:
    return create_network("Dinsos Model", ["17"])


def faulty(frames: list[Frame], fault: str, i: int, j: int) -> list[Frame]:
    """`frames` with one fault of the link (the first frame, the hello, is kept)."""
    frames = list(frames)
    if len(frames) > 2 and fault != "none":
        i, j = 1 + i % (len(frames) - 1), 1 + j % (len(frames) - 1)
        if fault == "drop":
            del frames[i]
        elif fault == "duplicate":
            frames.insert(j, frames[i])
        else:
            frames[i], frames[j] = frames[j], frames[i]
    return frames


class Convergence(RuleBasedStateMachine):
    """Three offices and a hub; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory()
        self.network = Network(Path(self.tmp.name), root())
        self.nodes: list[Peer] = []
        self.hub: Peer | None = None
        self.ids: list[str] = []
        self.now = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000)
        self.secret = os.urandom(32)  # the network data key that seals drive files

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def tick(self) -> int:
        self.now += 1000
        return self.now

    @initialize()
    def enrol(self) -> None:
        for scope in SCOPES:
            node = self.run(self.network.node(scope))
            node.records.clock = self.tick
            self.nodes.append(node)
        self.hub = self.run(self.network.node(["17"]))

    @property
    def everyone(self) -> list[Peer]:
        assert self.hub is not None
        return [*self.nodes, self.hub]

    @rule(node=st.integers(0, 2), region=st.integers(0, 2), pick=st.integers(0, 11))
    def create(self, node: int, region: int, pick: int) -> None:
        household = copy.deepcopy(households()[pick])
        household.pop("id")
        household["kode_wilayah"] = REGIONS[region]
        created = self.run(self.nodes[node].records.create(household, f"op{node}"))
        self.ids.append(created["id"])

    def edit(self, node: int, slot: int, changes: dict[str, Any]) -> None:
        if not self.ids:
            return
        record_id = self.ids[slot % len(self.ids)]
        with contextlib.suppress(RecordNotFound):  # not here yet
            self.run(
                self.nodes[node].records.update(record_id, lambda h: {**h, **changes}, f"op{node}")
            )

    @rule(node=st.integers(0, 2), slot=st.integers(0, 30), value=st.integers(1, 9))
    def edit_field(self, node: int, slot: int, value: int) -> None:
        self.edit(node, slot, {"desil": value})

    @rule(node=st.integers(0, 2), slot=st.integers(0, 30), region=st.integers(0, 2))
    def move(self, node: int, slot: int, region: int) -> None:
        self.edit(node, slot, {"kode_wilayah": REGIONS[region]})

    @rule(a=st.integers(0, 2), b=st.integers(0, 2), slot=st.integers(0, 30))
    def same_field_on_two_nodes(self, a: int, b: int, slot: int) -> None:
        self.edit(a, slot, {"dusun": f"Dusun {a}"})
        self.edit(b, slot, {"dusun": f"Dusun {b}x"})

    @rule(node=st.integers(1, 2), learners=st.sets(st.integers(0, 3), max_size=4))
    def revoke(self, node: int, learners: set[int]) -> None:
        """Node `node` is revoked now; only `learners` hear of it before healing."""
        if self.network.revocations.is_revoked(self.nodes[node].key.node_id_hex):
            return
        revoked = issue_revocation_list(
            root(),
            self.network.revocations,
            self.nodes[node].key.node_id_hex,
            "hilang",
            revoked_at=datetime.fromtimestamp(self.now / 1000, UTC),
        )
        self.network.revocations = revoked
        for index in learners:
            self.everyone[index].engine.trust = CertificateTrust(root().cert_pem, revoked)

    @rule(
        sender=st.integers(0, 3),
        receiver=st.integers(0, 3),
        path=st.sampled_from(PATHS),
        fault=st.sampled_from(FAULTS),
        i=st.integers(0, 40),
        j=st.integers(0, 40),
    )
    def deliver(self, sender: int, receiver: int, path: str, fault: str, i: int, j: int) -> None:
        src, dst = self.everyone[sender], self.everyone[receiver]
        if src is dst:
            return
        if path == "hub":  # up to the hub, then down from it
            self.run(self.lan(src, self.everyone[3], fault, i, j))
            self.run(self.lan(self.everyone[3], dst, "none", i, j))
        elif path == "usb":
            self.run(self.usb(src, dst, cut=i * j if fault == "drop" else None))
        else:
            self.run(self.lan(src, dst, fault, i, j))

    async def lan(self, src: Peer, dst: Peer, fault: str, i: int, j: int) -> None:
        if src is not dst:
            await dst.engine.ingest(faulty(await src.frames_for(dst), fault, i, j))

    async def usb(self, src: Peer, dst: Peer, cut: int | None) -> None:
        frames = await src.frames_for(None)  # a drive carries everything its writer holds
        data = build_drive_file(
            frames[0],  # type: ignore[arg-type]
            frames[1:-1],
            certificate=src.engine.certificate,
            key_id="k1",
            epoch=1,
            secret=self.secret,
            sign=src.key.sign,
            created_ms=self.now,
        )
        if cut is not None:  # the drive was pulled while the file was written
            data = data[: max(1, cut % len(data))]
        try:
            drive = parse_drive_file(data)
        except Exception:
            return
        receiver = dst.engine.receiver()
        reader = DriveFileReader(drive, BytesSource(data), self.secret)
        for batch in reader.batches():
            await receiver.receive(batch)
        await receiver.finish()

    async def heal(self) -> None:
        for peer in self.everyone:
            peer.engine.trust = CertificateTrust(root().cert_pem, self.network.revocations)
        for _ in range(HEAL_ROUNDS):
            before = [await p.engine.frontier() for p in self.everyone]
            for peer in self.everyone:
                for other in self.everyone:
                    if peer is not other:
                        await sync_one_way(peer, other)
            if [await p.engine.frontier() for p in self.everyone] == before:
                return

    async def check(self) -> None:
        await self.heal()
        frontiers = [await p.engine.frontier() for p in self.everyone]
        assert all(f == frontiers[0] for f in frontiers), "frontiers differ after healing"
        assert all(f != Frontier() for f in frontiers) or not self.ids
        held: list[set[str]] = []
        heads: list[dict[str, list[bytes]]] = []
        for peer in self.everyone:
            assert (await peer.engine.status()).pending == 0, "an applicable entry waits"
            rows = await peer.db.fetchall(
                "SELECT record_id FROM pending_entries WHERE refusal IS NOT NULL"
            )
            held.append({record_id_text(bytes(r[0])) for r in rows})
            docs = await peer.db.fetchall("SELECT id, doc FROM record_bodies")
            heads.append({rid: sorted(RecordDoc.load(doc).heads) for rid, doc in docs})
            if held[-1]:
                assert await refusal_summary(peer.db), "a refusal the node does not show"
        for x in range(len(heads)):
            for y in range(x + 1, len(heads)):
                for record_id in set(heads[x]) | set(heads[y]):
                    if heads[x].get(record_id) != heads[y].get(record_id):
                        assert record_id in held[x] | held[y], f"silent difference {record_id}"

    def teardown(self) -> None:
        try:
            if self.hub is not None:
                self.run(self.check())
        finally:
            self.run(self.network.close())
            self.loop.close()
            self.tmp.cleanup()


@pytest.fixture
def examples(request: pytest.FixtureRequest) -> int:
    return EXAMPLES * (10 if request.config.getoption("--soak") else 1)


def test_every_difference_after_healing_is_an_explicit_refusal(examples: int) -> None:
    machine = settings(
        max_examples=examples,
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )(Convergence)
    machine.TestCase().runTest()
