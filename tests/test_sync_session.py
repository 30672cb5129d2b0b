"""Sync sessions over real mutual-TLS sockets on loopback: convergence, no-op cost, refusals."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from certified_peers import Network
from conftest import generate
from sync_peers import Peer

from simpul.crypto.network_root import create_network
from simpul.crypto.revocation import issue_revocation_list
from simpul.crypto.tls import client_context, server_context
from simpul.node.sync_session import PULL, SessionError, SyncServer, Trust, opening, sync_with
from simpul.sync.frontier import Frontier


def contexts(network: Network, peer: Peer, private: Path) -> tuple[ssl.SSLContext, ...]:
    certificate = network.certificates[peer.origin]
    root = network.root.cert_pem
    return (
        server_context(peer.key, certificate, root, network.revocations, private_dir=private),
        client_context(peer.key, certificate, root, network.revocations, private_dir=private),
    )


@asynccontextmanager
async def serving(
    network: Network, peer: Peer, private: Path, trust: Trust | None = None
) -> AsyncIterator[tuple[str, SyncServer]]:
    """`peer`'s sync server on a free loopback port, with TLS."""
    server_ctx, _ = contexts(network, peer, private)
    sync_server = SyncServer(
        peer.engine, trust or Trust(network.root.cert_pem, network.revocations)
    )
    runner = web.AppRunner(sync_server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}", sync_server
    finally:
        await runner.cleanup()


def trust_of(network: Network) -> Trust:
    return Trust(network.root.cert_pem, network.revocations)


async def state(peer: Peer) -> tuple:
    return await peer.state()


async def test_one_session_converges_both_ways(
    tmp_path: Path, network: Network, households_jsonl: list
) -> None:
    a, b = await network.node(["1709", "1702"]), await network.node(["1709", "1702"])
    created = [await a.records.create(h, "ani") for h in households_jsonl[:10]]
    for household in households_jsonl[10:15]:
        await b.records.create(household, "budi")
    shared = created[0]["id"]
    _, client_ctx = contexts(network, a, tmp_path)
    async with serving(network, b, tmp_path) as (url, _):
        report = await sync_with(a.engine, url, client_ctx, trust_of(network))
        assert (report.received, report.sent) == (5, 10)
        await b.records.update(shared, lambda h: {**h, "desil": 1}, "budi")
        await a.records.update(shared, lambda h: {**h, "alamat": "Jl. Baru 1"}, "ani")
        await sync_with(a.engine, url, client_ctx, trust_of(network))
    assert await state(a) == await state(b)
    merged = await a.records.get(shared)
    assert (merged["desil"], merged["alamat"]) == (1, "Jl. Baru 1")


async def test_noop_session_is_one_small_request(
    tmp_path: Path, network: Network, households_jsonl: list
) -> None:
    a, b = await network.node(["1709", "1702"]), await network.node(["1709", "1702"])
    for household in households_jsonl[:20]:
        await a.records.create(household, "ani")
    _, client_ctx = contexts(network, a, tmp_path)
    async with serving(network, b, tmp_path) as (url, server):
        await sync_with(a.engine, url, client_ctx, trust_of(network))
        report = await sync_with(a.engine, url, client_ctx, trust_of(network))
    assert (report.received, report.sent) == (0, 0)
    assert report.bytes_in + report.bytes_out < 400
    assert len(server.sessions) == 1  # only the first session needed a push


async def test_revoked_client_is_refused(tmp_path: Path, network: Network) -> None:
    a, b = await network.node(["1709"]), await network.node(["1709"])
    _, client_ctx = contexts(network, a, tmp_path)
    revoked = issue_revocation_list(
        network.root, network.revocations, a.key.node_id_hex, "laptop hilang"
    )
    async with serving(network, b, tmp_path, Trust(network.root.cert_pem, revoked)) as (url, _):
        with pytest.raises(SessionError, match=r"refused|403"):
            await sync_with(a.engine, url, client_ctx, trust_of(network))
    assert await b.records.counts() == {"records": 0, "entries": 0, "feed_length": 0}


async def test_node_of_another_network_is_refused(tmp_path: Path, network: Network) -> None:
    ours = await network.node(["1709"])
    other = Network(tmp_path / "other", create_network("Lain", ["1709"]))
    try:
        stranger = await other.node(["1709"])
        _, stranger_ctx = contexts(other, stranger, tmp_path)
        async with serving(network, ours, tmp_path) as (url, _):
            with pytest.raises(SessionError):
                await sync_with(stranger.engine, url, stranger_ctx, trust_of(other))
    finally:
        await other.close()


async def test_client_refuses_an_unexpected_node_at_the_address(
    tmp_path: Path, network: Network
) -> None:
    a, b = await network.node(["1709"]), await network.node(["1709"])
    _, client_ctx = contexts(network, a, tmp_path)
    async with serving(network, b, tmp_path) as (url, _):
        with pytest.raises(SessionError, match="expected node"):
            await sync_with(
                a.engine, url, client_ctx, trust_of(network), expected_node_id="00" * 16
            )


async def test_cloned_identity_with_a_forked_feed_is_refused_with_advice(
    tmp_path: Path, network: Network, households_jsonl: list
) -> None:
    original, office = await network.node(["1709", "1702"]), await network.node(["1709", "1702"])
    await original.records.create(households_jsonl[0], "ani")
    copy = network.base / f"node{len(network.peers)}" / "simpul.db"  # where node() opens it
    copy.parent.mkdir()
    await original.db.reader.execute("VACUUM INTO ?", (str(copy),))  # a copied SD card
    clone = await network.node(["1709", "1702"], key=original.key)
    await original.records.create(households_jsonl[1], "ani")
    for household in households_jsonl[2:4]:  # the clone goes further than the original
        await clone.records.create(household, "ani")
    _, client_ctx = contexts(network, office, tmp_path)
    async with serving(network, original, tmp_path) as (url, _):
        await sync_with(office.engine, url, client_ctx, trust_of(network))
    async with serving(network, clone, tmp_path) as (url, _):
        report = await sync_with(office.engine, url, client_ctx, trust_of(network))
    assert report.forked == {original.origin.hex()}
    assert (await office.records.counts())["records"] == 2


async def test_a_chunk_refused_for_good_is_not_sent_again(
    tmp_path: Path, network: Network, households_jsonl: list
) -> None:
    original = await network.node(["1709", "1702"])
    clone = await network.node(["1709", "1702"], key=original.key)  # a copied SD card
    office = await network.node(["1709", "1702"])
    await clone.records.create(households_jsonl[0], "ani")  # seq 1 of the shared identity
    for household in households_jsonl[1:4]:  # seq 1-3 of the original: forked at 1
        await original.records.create(household, "ani")
    _, clone_ctx = contexts(network, clone, tmp_path)
    _, original_ctx = contexts(network, original, tmp_path)
    async with serving(network, office, tmp_path) as (url, server):
        await sync_with(clone.engine, url, clone_ctx, trust_of(network))
        first = await sync_with(original.engine, url, original_ctx, trust_of(network))
        assert server.sessions[-1].refusals == {"chain": 1, "gap": 1}
        assert first.peer_refuses is not None and first.peer_refuses.counts() == {"chain": 1}
        again = await sync_with(original.engine, url, original_ctx, trust_of(network))
        assert again.sent == 0 and again.bytes_out < 400, again  # told, it stops offering
        assert len(server.sessions) == 2  # no push in the last session


async def test_a_client_that_goes_away_mid_pull_is_one_log_line(
    tmp_path: Path, network: Network, caplog: pytest.LogCaptureFixture
) -> None:
    data = [json.loads(line) for line in generate(400, "jsonl").splitlines()]
    a, b = await network.node(["1709", "1702"]), await network.node(["1709", "1702"])
    await a.records.import_batch(list(enumerate(data)), "import")
    _, client_ctx = contexts(network, b, tmp_path)
    async with serving(network, a, tmp_path) as (url, server):
        body = opening(b.engine, Frontier())
        async with aiohttp.ClientSession() as http:
            response = await http.post(url + PULL, data=body, ssl=client_ctx)
            await response.content.read(4096)
            response.close()  # gone: the server is still writing the rest
        async with asyncio.timeout(10):  # the server notices at its next write
            while server.in_session:
                await asyncio.sleep(0.05)
        report = await sync_with(b.engine, url, client_ctx, trust_of(network))
        assert report.received == 400  # the next session takes everything
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
