"""Invariant 4 through the engine: only certified origins, inside their scope, before revocation."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

from certified_peers import Network
from sync_peers import Peer, sync_one_way

from simpul.crypto.network_root import create_network
from simpul.crypto.revocation import issue_revocation_list
from simpul.node.trust_policy import CertificateTrust


def in_region(household: dict, kode: str) -> dict:
    moved = copy.deepcopy({k: v for k, v in household.items() if k != "id"})
    moved["kode_wilayah"] = kode
    return moved


async def ids(peer: Peer) -> set[str]:
    return {r[0] for r in await peer.db.fetchall("SELECT id FROM records")}


async def test_out_of_scope_writes_are_refused_with_reason(
    network: Network, households_jsonl: list
) -> None:
    office = await network.node(["1709"])
    village = await network.node(["1709042001"])
    inside = await village.records.create(in_region(households_jsonl[0], "1709042001"), "ani")
    outside = await village.records.create(in_region(households_jsonl[1], "1702032007"), "ani")
    report = await sync_one_way(village, office)
    assert await ids(office) == {inside["id"]}
    assert outside["id"] not in await ids(office)
    assert report.reasons()["scope"] == 1
    moved = await village.records.update(
        inside["id"], lambda h: {**h, "kode_wilayah": "1709099999"}, "ani"
    )
    report = await sync_one_way(village, office)
    assert report.reasons()["scope"] >= 1
    assert (await office.records.get(inside["id"]))["kode_wilayah"] == "1709042001"
    assert moved["kode_wilayah"] == "1709099999"


async def test_revoked_node_keeps_earlier_entries_loses_later_ones(
    network: Network, households_jsonl: list
) -> None:
    office = await network.node(["1709", "1702"])
    lost = await network.node(["1709", "1702"])
    revoked_at = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    hour_ms = 3600 * 1000
    cut_ms = int(revoked_at.timestamp() * 1000)
    lost.records.clock = lambda: cut_ms - hour_ms
    before = await lost.records.create(households_jsonl[2], "ani")
    lost.records.clock = lambda: cut_ms + hour_ms
    after = await lost.records.create(households_jsonl[3], "ani")
    revoked = issue_revocation_list(
        network.root,
        network.revocations,
        lost.key.node_id_hex,
        "laptop hilang",
        revoked_at=revoked_at,
    )
    office.engine.trust = CertificateTrust(network.root.cert_pem, revoked)
    report = await sync_one_way(lost, office)
    held = await ids(office)
    assert before["id"] in held
    assert after["id"] not in held
    assert report.reasons()["revoked"] == 1


async def test_uncertified_and_foreign_origins_are_refused(
    tmp_path: Path, network: Network, households_jsonl: list
) -> None:
    office = await network.node(["1709", "1702"])
    stranger = await network.node(["1709"], certified=False)
    await stranger.records.create(households_jsonl[4], "x")
    report = await sync_one_way(stranger, office)
    assert await ids(office) == set()
    assert report.refused

    other = Network(tmp_path / "other", create_network("Lain", ["1709", "1702"]))
    try:
        impostor = await other.node(["1709", "1702"])
        await impostor.records.create(households_jsonl[5], "x")
        report = await sync_one_way(impostor, office)
        assert await ids(office) == set()
        assert any("certificate" in r.detail for r in report.refused)
    finally:
        await other.close()
