"""The hub over real mutual TLS on loopback: it stores, applies and serves a network's
entries, and refuses (with a logged, counted reason) another network's node, a revoked
node, a tampered entry, an out-of-scope write and a replayed chunk."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from certified_peers import Network
from conftest import simpul_cli
from sync_peers import Peer
from test_network_cli import PASSPHRASE
from test_network_cli import create_network as create_network_cli
from test_trust_ingest import in_region

from simpul.crypto.data_key import DataKey
from simpul.crypto.enrollment import EnrollmentRequest, admit, pairing_code
from simpul.crypto.network_root import create_network
from simpul.crypto.node_key import NodeKey
from simpul.crypto.revocation import issue_revocation_list
from simpul.crypto.tls import client_context
from simpul.node import hub_networks, membership
from simpul.node.hub import Hub, status_app
from simpul.node.hub_staging import FileStaging
from simpul.node.hub_store import SqliteHubStore
from simpul.node.sync_session import NEWS, Dial, SessionError, SessionReport, Trust, push_to
from simpul.node.uplink_session import Meter, hub_round
from simpul.sync.bundle import Entries, Frame, encode_frame
from simpul.sync.frontier import Frontier


def certify_hub(hub_dir: Path, network: Network, scope: list[str]) -> NodeKey:
    """What `simpul hub trust ROOT --grant GRANT` does with the admin's grant."""
    hub_dir.mkdir(parents=True, exist_ok=True)
    key = NodeKey.load_or_create(hub_dir / "node.key")
    request = EnrollmentRequest.create(key, membership.exchange_key(hub_dir), "hub")
    grant = admit(
        network.root, request, code=pairing_code(request), role="hub", scope=scope,
        data_key=DataKey.generate(), revocations=network.revocations,
    )  # fmt: skip
    hub_networks.trust(hub_dir, key, network.root.cert_pem, grant)
    return key


@dataclass
class RunningHub:
    hub: Hub
    url: str
    status_url: str


@asynccontextmanager
async def running_hub(hub_dir: Path, key: NodeKey) -> AsyncIterator[RunningHub]:
    store = SqliteHubStore(hub_dir, key)
    hub = Hub(hub_dir, key, store)
    await hub.open()
    sync_runner, status_runner = web.AppRunner(hub.app()), web.AppRunner(status_app(hub))
    await sync_runner.setup()
    await web.TCPSite(sync_runner, "127.0.0.1", 0, ssl_context=hub.tls_context()).start()
    await status_runner.setup()
    await web.TCPSite(status_runner, "127.0.0.1", 0).start()
    try:
        yield RunningHub(
            hub,
            f"https://127.0.0.1:{sync_runner.addresses[0][1]}",
            f"http://127.0.0.1:{status_runner.addresses[0][1]}",
        )
    finally:
        await sync_runner.cleanup()
        await status_runner.cleanup()
        await store.close()


@pytest.fixture
async def hub(tmp_path: Path, network: Network) -> AsyncIterator[RunningHub]:
    key = certify_hub(tmp_path / "hub", network, ["1709"])
    async with running_hub(tmp_path / "hub", key) as running:
        yield running


def dial(network: Network, peer: Peer, hub: RunningHub, tmp: Path) -> Dial:
    context = client_context(
        peer.key, network.certificates[peer.origin], network.root.cert_pem,
        network.revocations, private_dir=tmp,
    )  # fmt: skip
    return Dial(
        hub.url,
        context,
        Trust(network.root.cert_pem, network.revocations),
        server_hostname=hub_networks.server_name(network.root.network_id),
    )


async def hub_status(hub: RunningHub) -> dict:
    async with (
        aiohttp.ClientSession() as http,
        http.get(hub.status_url + "/api/v1/status") as answer,
    ):
        return await answer.json()


async def refusals(hub: RunningHub) -> dict[str, int]:
    return (await hub_status(hub))["networks"][0]["refusals"]


async def push_frames(peer: Peer, target: Dial, frames: list[Frame]) -> Frontier:
    """One push of hand-made frames over the hub's TLS (a misbehaving node)."""

    async def encoded() -> AsyncIterator[bytes]:
        for frame in frames:
            yield encode_frame(frame)

    connector = aiohttp.TCPConnector(ssl=target.context)
    async with aiohttp.ClientSession(connector=connector) as http:
        return await push_to(http, peer.engine, target, encoded(), SessionReport())


async def all_frames(peer: Peer) -> list[Frame]:
    return [frame async for frame in peer.engine.outgoing_frames(Frontier())]


async def test_office_changes_reach_the_hub_and_come_back_to_another_office_node(
    tmp_path: Path, network: Network, hub: RunningHub, households_jsonl: list
) -> None:
    office, other = await network.node(["1709"]), await network.node(["1709"])
    in_scope = [h for h in households_jsonl if h["kode_wilayah"].startswith("1709")]
    for household in in_scope[:6]:
        await office.records.create(household, "ani")
    meter = Meter()
    done = await hub_round(office.engine, dial(network, office, hub, tmp_path), meter)
    assert done.hub_frontier == await office.engine.frontier()
    assert meter.sent > done.report.bytes_out > 0 and meter.received > 0  # TLS counted too
    facts = (await hub_status(hub))["networks"][0]
    assert facts["records"] == 6 and facts["refusals"] == {}
    assert facts["nodes"][office.key.node_id_hex]["entries_in"] == 6
    assert facts["in_session"] == []  # the round has ended on the hub too

    pulled = await hub_round(other.engine, dial(network, other, hub, tmp_path), Meter())
    assert pulled.report.received == 6
    assert (await other.state())[1] == (await office.state())[1]


async def test_push_goes_in_small_pieces_each_acknowledged(
    tmp_path: Path, network: Network, hub: RunningHub, households_jsonl: list
) -> None:
    office = await network.node(["1709"])
    in_scope = [h for h in households_jsonl if h["kode_wilayah"].startswith("1709")]
    for household in in_scope[:12]:
        await office.records.create(household, "ani")  # one chunk (checkpoint) each
    heard: list[Frontier] = []
    done = await hub_round(
        office.engine, dial(network, office, hub, tmp_path), Meter(),
        on_frontier=heard.append, piece_bytes=2000,
    )  # fmt: skip
    assert done.pieces >= 3
    seqs = [f.get(office.origin, 0) for f in heard]
    assert seqs == sorted(seqs) and seqs[-1] == 12 and len(set(seqs)) == len(seqs)


async def test_another_networks_node_is_refused_and_counted(
    tmp_path: Path, network: Network, hub: RunningHub
) -> None:
    other = Network(tmp_path / "other", create_network("Kabupaten lain", ["1702"]))
    try:
        stranger = await other.node(["1702"])
        with pytest.raises(SessionError):
            await hub_round(stranger.engine, dial(other, stranger, hub, tmp_path), Meter())
    finally:
        await other.close()
    assert (await hub_status(hub))["refused_unknown_network"] == 1


async def test_revoked_node_is_refused_once_the_hub_has_the_list(
    tmp_path: Path, network: Network, hub: RunningHub
) -> None:
    good, lost = await network.node(["1709"]), await network.node(["1709"])
    await hub_round(lost.engine, dial(network, lost, hub, tmp_path), Meter())  # still fine
    revoked = issue_revocation_list(
        network.root, network.revocations, lost.key.node_id_hex, "laptop hilang"
    )
    news = json.dumps({"revocations": revoked.to_pem().decode(), "wraps": {}}).encode()
    target = dial(network, good, hub, tmp_path)
    connector = aiohttp.TCPConnector(ssl=target.context)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.post(hub.url + NEWS, data=news, server_hostname=target.server_hostname) as answer,
    ):
        assert (await answer.json())["taken"] is True
    with pytest.raises(SessionError, match="403"):
        await hub_round(lost.engine, dial(network, lost, hub, tmp_path), Meter())
    facts = (await hub_status(hub))["networks"][0]
    assert facts["refusals"] == {"revoked": 1} and facts["revocations"] == revoked.number


async def test_tampered_entry_is_refused_and_counted(
    tmp_path: Path, network: Network, hub: RunningHub, households_jsonl: list
) -> None:
    office = await network.node(["1709"])
    await office.records.create(in_region(households_jsonl[0], "1709042001"), "ani")
    frames = await all_frames(office)
    entries = next(f for f in frames if isinstance(f, Entries))
    record_id, change = entries.items[0]
    forged = change[:-1] + bytes([change[-1] ^ 1])
    frames[frames.index(entries)] = replace(entries, items=((record_id, forged),))
    answer = await push_frames(office, dial(network, office, hub, tmp_path), frames)
    assert office.origin not in answer
    assert await refusals(hub) == {"chain": 1}
    assert (await hub_status(hub))["networks"][0]["records"] == 0


async def test_out_of_scope_write_is_held_unapplied_and_counted(
    tmp_path: Path, network: Network, hub: RunningHub, households_jsonl: list
) -> None:
    village = await network.node(["1709042001"])
    await village.records.create(in_region(households_jsonl[1], "1702032007"), "ani")
    await village.records.create(in_region(households_jsonl[2], "1709042001"), "ani")
    # the refused entry is held in the hub's copy of the feed, so the uplink is not stuck
    # behind it and the later in-scope household arrives
    await hub_round(village.engine, dial(network, village, hub, tmp_path), Meter())
    assert await refusals(hub) == {"scope": 1}
    facts = (await hub_status(hub))["networks"][0]
    assert (facts["records"], facts["entries"]) == (1, 2)


async def test_replayed_chunk_has_no_effect_and_is_counted(
    tmp_path: Path, network: Network, hub: RunningHub, households_jsonl: list
) -> None:
    office = await network.node(["1709"])
    await office.records.create(in_region(households_jsonl[2], "1709042001"), "ani")
    frames = await all_frames(office)
    target = dial(network, office, hub, tmp_path)
    first = await push_frames(office, target, frames)
    before = await hub_status(hub)
    again = await push_frames(office, target, frames)
    after = await hub_status(hub)
    assert again == first
    assert after["networks"][0]["records"] == before["networks"][0]["records"] == 1
    assert after["networks"][0]["entries"] == before["networks"][0]["entries"]
    assert await refusals(hub) == {"replayed": 1}


def test_hub_trust_command_takes_a_hub_grant_only(tmp_path: Path) -> None:
    admin, hub_dir = tmp_path / "admin", tmp_path / "hub"
    network_id = create_network_cli(admin)["network_id"]
    root = admin / "network" / "root.cert.pem"
    request, grant = tmp_path / "hub.req", tmp_path / "hub.grant"
    assert simpul_cli(hub_dir, "enroll", "request", "--out", str(request)).returncode == 0
    for role in ("office", "hub"):
        admitted = simpul_cli(
            admin, "network", "admit", str(request), "--role", role, "--scope", "1709",
            "--out", str(grant), "--passphrase-stdin", stdin=PASSPHRASE,
        )  # fmt: skip
        assert admitted.returncode == 0, admitted.stderr
        trusted = simpul_cli(hub_dir, "hub", "trust", str(root), "--grant", str(grant))
        if role == "office":
            assert trusted.returncode == 1
            assert "admit the hub with" in trusted.stderr and "Traceback" not in trusted.stderr
    assert trusted.returncode == 0, trusted.stderr
    assert network_id in trusted.stdout
    foreign = tmp_path / "foreign.pem"
    foreign.write_bytes(create_network("Lain", ["1702"]).cert_pem)
    again = simpul_cli(hub_dir, "hub", "trust", str(foreign), "--grant", str(grant))
    assert again.returncode == 1 and "not for this root" in again.stderr


async def test_hub_metrics_count_refusals_per_node_and_reason(
    tmp_path: Path, network: Network, hub: RunningHub, households_jsonl: list
) -> None:
    village = await network.node(["1709042001"])
    await village.records.create(in_region(households_jsonl[1], "1702032007"), "ani")
    await hub_round(village.engine, dial(network, village, hub, tmp_path), Meter())
    async with aiohttp.ClientSession() as http, http.get(hub.status_url + "/metrics") as answer:
        text = await answer.text()
    labels = f'network_id="{network.root.network_id}",node_id="{village.key.node_id_hex}"'
    assert f'simpul_hub_refusals_total{{{labels},reason="scope"}} 1' in text
    assert f"simpul_hub_node_sessions_total{{{labels}}}" in text


async def test_a_staged_chunk_resumes_and_one_that_does_not_verify_is_dropped_whole(
    tmp_path: Path, network: Network, hub: RunningHub, households_jsonl: list
) -> None:
    office = await network.node(["1709"])
    batch = [(i, in_region(h, "1709042001")) for i, h in enumerate(households_jsonl[:4])]
    await office.records.import_batch(batch, "import")  # one chunk: four entries, one checkpoint
    certificate, entries, checkpoint = await all_frames(office)
    assert isinstance(entries, Entries) and len(entries.items) == 4
    head = replace(entries, items=entries.items[:2])
    record_id, change = entries.items[2]
    forged = (record_id, change[:-1] + bytes([change[-1] ^ 1]))
    tail = replace(entries, first_seq=3, items=(forged, entries.items[3]))
    target = dial(network, office, hub, tmp_path)

    staged = await push_frames(office, target, [certificate, head])  # cut before the checkpoint
    assert office.origin not in staged
    assert await refusals(hub) == {}
    await push_frames(office, target, [certificate, tail, checkpoint])  # resumed, tampered
    assert await refusals(hub) == {"chain": 4}  # the whole chunk, staged entries included

    done = await hub_round(office.engine, target, Meter())  # nothing staged is left over
    assert done.report.staged == Frontier()
    assert done.hub_frontier == await office.engine.frontier()
    assert (await hub_status(hub))["networks"][0]["records"] == 4


def test_staging_torn_by_a_crash_keeps_its_readable_prefix(tmp_path: Path) -> None:
    origin = bytes(range(16))
    items = ((bytes(16), b"change"), (bytes(16), b"x"))
    frames = [Entries(origin, 1 + 2 * i, items) for i in range(3)]
    staging = FileStaging(tmp_path)
    for frame in frames:
        staging.append(frame)
    path = next(tmp_path.glob("*.staged"))
    path.write_bytes(path.read_bytes()[:-3])  # the last frame torn
    reopened = FileStaging(tmp_path)
    assert reopened.frontier() == Frontier({origin: 4})
    reopened.append(frames[2])
    assert reopened.frames(origin) == frames
    reopened.clear(origin)
    assert FileStaging(tmp_path).frontier() == Frontier()
