"""Concurrent edits of one field are shown with every competing value, and a verifier's
choice clears them on every node; edits of different fields or members are not conflicts."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer
from conftest import make_token
from sync_peers import Peer, open_peers, sync_both_ways

from simpul.node.runtime import open_node
from simpul.node.server import build_app
from simpul.sync.conflicts import parse_field
from simpul.sync.household import ATAP


async def concurrent(a: Peer, b: Peer, record_id: str, on_a: dict, on_b: dict) -> None:
    await a.records.update(record_id, lambda h: {**h, **on_a}, "ani")
    await b.records.update(record_id, lambda h: {**h, **on_b}, "budi")
    await sync_both_ways(a, b)


async def test_same_field_conflict_lists_both_values_and_writers(
    tmp_path: Path, households_jsonl: list
) -> None:
    async with open_peers(tmp_path, 2) as (a, b):
        record = await a.records.create(households_jsonl[0], "ani")
        await sync_both_ways(a, b)
        await concurrent(a, b, record["id"], {"desil": 2}, {"desil": 9})
        seen_a, seen_b = await a.records.get(record["id"]), await b.records.get(record["id"])
        assert seen_a["_meta"]["conflicts"] == seen_b["_meta"]["conflicts"]
        (conflict,) = seen_a["_meta"]["conflicts"]
        assert conflict["field"] == "desil"
        values = {(v["value"], v["operator"], v["node"]) for v in conflict["values"]}
        assert values == {(2, "ani", a.origin.hex()), (9, "budi", b.origin.hex())}
        assert seen_a["desil"] == seen_b["desil"] in (2, 9)


async def test_different_fields_and_members_do_not_conflict(
    tmp_path: Path, households_jsonl: list
) -> None:
    household = next(h for h in households_jsonl if len(h["anggota"]) >= 2)
    async with open_peers(tmp_path, 2) as (a, b):
        record = await a.records.create(household, "ani")
        await sync_both_ways(a, b)
        first, second = record["anggota"][0], record["anggota"][1]
        on_a = {"alamat": "Jl. A", "anggota": [{**first, "pekerjaan": "Nelayan"}, second]}
        on_b = {"desil": 1, "anggota": [first, {**second, "pekerjaan": "Guru"}]}
        await concurrent(a, b, record["id"], on_a, on_b)
        merged = await a.records.get(record["id"])
        assert merged["_meta"]["conflicts"] == []
        assert (merged["alamat"], merged["desil"]) == ("Jl. A", 1)
        assert [m["pekerjaan"] for m in merged["anggota"][:2]] == ["Nelayan", "Guru"]


async def test_resolution_clears_the_conflict_on_every_node(
    tmp_path: Path, households_jsonl: list
) -> None:
    async with open_peers(tmp_path, 3) as (a, b, c):
        record = await a.records.create(households_jsonl[1], "ani")
        await sync_both_ways(a, b)
        member = record["anggota"][0]["id"]
        rumah = record["rumah"]
        first, second = [v for v in ATAP if v != rumah["atap"]][:2]
        await concurrent(
            a, b, record["id"],
            {"rumah": {**rumah, "atap": first}},
            {"rumah": {**rumah, "atap": second}},
        )  # fmt: skip
        await concurrent(
            a, b, record["id"],
            {"anggota": [{**record["anggota"][0], "nama": "SITI A"}, *record["anggota"][1:]]},
            {"anggota": [{**record["anggota"][0], "nama": "SITI B"}, *record["anggota"][1:]]},
        )  # fmt: skip
        fields = {c["field"] for c in (await a.records.get(record["id"]))["_meta"]["conflicts"]}
        assert fields == {"rumah.atap", f"anggota[{member}].nama"}
        current = (await a.records.get(record["id"]))["rumah"]["atap"]
        await a.records.resolve(record["id"], parse_field("rumah.atap"), current, "verif")
        await a.records.resolve(
            record["id"], parse_field(f"anggota[{member}].nama"), "SITI AMINAH", "verif"
        )
        await sync_both_ways(a, b)
        await sync_both_ways(b, c)
        for peer in (a, b, c):
            settled = await peer.records.get(record["id"])
            assert settled["_meta"]["conflicts"] == []
            assert settled["rumah"]["atap"] == current
            assert settled["anggota"][0]["nama"] == "SITI AMINAH"


async def test_resolve_endpoint_checks_role_and_value(
    tmp_path: Path, households_jsonl: list
) -> None:
    data_dir = tmp_path / "node"
    verifier = await make_token(data_dir, "vera", "verifier")
    operator = await make_token(data_dir, "opi", "operator")
    async with open_node(data_dir) as node:
        record = await node.records.create(households_jsonl[2], "opi")
        server = TestServer(build_app(node), host="127.0.0.1")
        await server.start_server()
        url = str(server.make_url(f"/api/v1/records/{record['id']}/resolve"))
        async with aiohttp.ClientSession() as http:

            async def post(token: str, body: dict) -> tuple[int, dict]:
                headers = {"Authorization": f"Bearer {token}"}
                async with http.post(url, json=body, headers=headers) as response:
                    return response.status, await response.json()

            assert (await post(operator, {"field": "desil", "value": 3}))[0] == 403
            status, body = await post(verifier, {"field": "desil", "value": 42})
            assert status == 422 and body["fields"][0]["field"] == "desil"
            status, body = await post(verifier, {"field": "nope.x", "value": 1})
            assert status == 422
            status, body = await post(verifier, {"field": "rumah.atap", "value": "seng"})
            assert status == 200 and body["rumah"]["atap"] == "Seng"
        await server.close()
