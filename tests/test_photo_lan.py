"""Photo files over the LAN carrier (mutual TLS on loopback): after the records, both ways,
checked against their hashes, resumed where a download stopped; and between two running
node processes, where node B ends up with every thumbnail and every full photo of A."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from certified_peers import Network
from conftest import NodeProcess, generate, simpul_cli, start_node_process
from photo_files import large_phone_photo, phone_photo
from sync_peers import Peer
from test_lan_sync import SYNC_PERIOD, Client, eventually, two_synced_nodes
from test_sync_session import contexts, trust_of

from simpul.node.photo_sync import add_photo_sync_routes, exchange_photos
from simpul.node.photos import Photos
from simpul.node.sync_session import SyncServer, sync_with
from simpul.sync.photos import FULL, THUMB

PHOTOS_DEFAULT = 4  # photos of 2-4 MB in the default suite; the slow test takes 200
PHOTOS_SLOW = 200


def photos_of(peer: Peer) -> Photos:
    return Photos(peer.db.path.parent, peer.db, peer.records)


@asynccontextmanager
async def serving_photos(
    network: Network, peer: Peer, photos: Photos, private: Path
) -> AsyncIterator[str]:
    """`peer`'s sync server with the photo endpoints, on a free loopback port."""
    server_ctx, _ = contexts(network, peer, private)
    server = SyncServer(peer.engine, trust_of(network))
    app = server.app()

    def pick(request: web.Request) -> Photos:
        server.authenticate(request)
        return photos

    add_photo_sync_routes(app, pick)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def with_photos(peer: Peer, photos: Photos, households: list[dict], who: str) -> list[dict]:
    """The households on `peer`, each with a photo of its own (seeded by the household)."""
    refs = []
    for household in households:
        record = await peer.records.create(household, who)
        photo = phone_photo(int(household["no_kk"][-6:]))
        refs.append(await photos.add(record["id"], photo, "depan", who))
    return refs


async def test_thumbnails_then_photos_follow_the_records_both_ways(
    tmp_path: Path, network: Network, households_jsonl: list
) -> None:
    a, b = await network.node(["1709", "1702"]), await network.node(["1709", "1702"])
    on_a, on_b = photos_of(a), photos_of(b)
    from_a = await with_photos(a, on_a, households_jsonl[:3], "ani")
    from_b = await with_photos(b, on_b, households_jsonl[3:5], "budi")
    _, client_ctx = contexts(network, b, tmp_path)
    async with serving_photos(network, a, on_a, tmp_path) as url:
        await sync_with(b.engine, url, client_ctx, trust_of(network))
        wanted = await on_b.index.wanted()
        assert [w.part for w in wanted] == [THUMB] * 3 + [FULL] * 3  # thumbnails first
        report = await exchange_photos(url, client_ctx, trust_of(network), on_b)
    assert (report.fetched, report.sent, report.refused) == (6, 4, 0)
    expected = sum(r["ukuran"] + r["kecil_ukuran"] for r in from_a)
    assert report.bytes_in == expected  # the files and nothing else
    for ref in from_a + from_b:
        for photos in (on_a, on_b):
            assert photos.store.has(ref["hash"]) and photos.store.has(ref["kecil"])
            assert photos.store.check(ref["hash"])
    assert report.still_wanted == [] and await on_a.index.wanted() == []


async def test_a_photo_that_does_not_match_its_hash_is_refused_and_fetched_again(
    tmp_path: Path, network: Network, households_jsonl: list
) -> None:
    a, b = await network.node(["1709", "1702"]), await network.node(["1709", "1702"])
    on_a, on_b = photos_of(a), photos_of(b)
    (ref,) = await with_photos(a, on_a, households_jsonl[:1], "ani")
    good = on_a.store.read(ref["hash"])
    on_a.store.path(ref["hash"]).write_bytes(good[:-100] + b"\0" * 100)  # rot on A's disk
    _, client_ctx = contexts(network, b, tmp_path)
    async with serving_photos(network, a, on_a, tmp_path) as url:
        await sync_with(b.engine, url, client_ctx, trust_of(network))
        report = await exchange_photos(url, client_ctx, trust_of(network), on_b)
        assert (report.fetched, report.refused) == (1, 1)  # the thumbnail, not the photo
        assert not on_b.store.has(ref["hash"]) and on_b.store.partial_size(ref["hash"]) == 0
        status = await on_b.status()
        assert (status["full_missing"], status["thumbs_missing"]) == (1, 0)
        on_a.store.path(ref["hash"]).write_bytes(good)  # e.g. restored from a backup
        report = await exchange_photos(url, client_ctx, trust_of(network), on_b)
    assert (report.fetched, report.refused) == (1, 0)
    assert on_b.store.read(ref["hash"]) == good


async def test_a_cut_download_resumes_where_it_stopped(
    tmp_path: Path, network: Network, households_jsonl: list
) -> None:
    a, b = await network.node(["1709", "1702"]), await network.node(["1709", "1702"])
    on_a, on_b = photos_of(a), photos_of(b)
    (ref,) = await with_photos(a, on_a, households_jsonl[:1], "ani")
    data = on_a.store.read(ref["hash"])
    on_b.store.append_partial(ref["hash"], data[: len(data) // 2])  # what a cut left
    _, client_ctx = contexts(network, b, tmp_path)
    async with serving_photos(network, a, on_a, tmp_path) as url:
        await sync_with(b.engine, url, client_ctx, trust_of(network))
        report = await exchange_photos(url, client_ctx, trust_of(network), on_b)
    assert report.fetched == 2
    assert report.bytes_in == ref["kecil_ukuran"] + len(data) - len(data) // 2
    assert on_b.store.read(ref["hash"]) == data


async def photo_nodes(
    office_village: tuple[Path, Path], node_processes: list[NodeProcess]
) -> tuple[NodeProcess, NodeProcess, str, str]:
    admin, desa, admin_token, desa_token = await two_synced_nodes(office_village)
    a = await start_node_process(admin, "--sync-period", SYNC_PERIOD)
    b = await start_node_process(desa, "--sync-period", SYNC_PERIOD)
    node_processes += [a, b]
    assert simpul_cli(admin, "peer", "add", f"127.0.0.1:{b.sync_port}").returncode == 0
    assert simpul_cli(desa, "peer", "add", f"127.0.0.1:{a.sync_port}").returncode == 0
    return a, b, admin_token, desa_token


async def photos_reach_the_other_node(
    office_village: tuple[Path, Path],
    node_processes: list[NodeProcess],
    households_jsonl: list,
    count: int,
) -> None:
    """`count` households with one 2-4 MB photo each on node A; node B gets every record
    with its thumbnail, then every full photo, byte for byte."""
    a, b, admin_token, desa_token = await photo_nodes(office_village, node_processes)
    pool = (
        households_jsonl
        if count <= 20
        else [json.loads(line) for line in generate(count * 3, "jsonl").splitlines()]
    )
    in_scope = [h for h in pool if h["kode_wilayah"].startswith("1709")]
    assert len(in_scope) >= count
    async with aiohttp.ClientSession() as http:
        on_a, on_b = Client(http, a, admin_token), Client(http, b, desa_token)
        refs = {}
        for index, household in enumerate(in_scope[:count]):
            record = await on_a.call("POST", "/api/v1/records", json=household)
            photo = await asyncio.to_thread(large_phone_photo, index)
            path = f"/api/v1/records/{record['id']}/photos?jenis=depan"
            refs[record["id"]] = await on_a.call("POST", path, data=photo)

        async def all_arrived() -> bool:
            facts = (await on_b.call("GET", "/api/v1/status"))["photos"]
            return (
                facts["referenced"] == count
                and facts["full_missing"] == 0 == facts["thumbs_missing"]
            )

        await eventually(all_arrived, "node B holds every photo", seconds=60 + count * 3)
        for record_id, ref in refs.items():
            record = await on_b.call("GET", f"/api/v1/records/{record_id}")
            assert record["foto"] == {ref["hash"]: ref}
            for part, size in (("kecil", ref["kecil_ukuran"]), ("besar", ref["ukuran"])):
                url = f"{b.url}/api/v1/records/{record_id}/photos/{ref['hash']}?part={part}"
                async with http.get(url, headers=on_b.headers) as response:
                    assert response.status == 200 and len(await response.read()) == size


async def test_photos_of_one_node_reach_the_other(
    office_village: tuple[Path, Path], node_processes: list[NodeProcess], households_jsonl: list
) -> None:
    await photos_reach_the_other_node(
        office_village, node_processes, households_jsonl, PHOTOS_DEFAULT
    )


@pytest.mark.long
async def test_two_hundred_photos_reach_the_other_node(
    office_village: tuple[Path, Path], node_processes: list[NodeProcess], households_jsonl: list
) -> None:
    await photos_reach_the_other_node(office_village, node_processes, households_jsonl, PHOTOS_SLOW)
