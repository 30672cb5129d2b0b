"""The JSON API on a real loopback socket and SQLite file: CRUD, search, history, errors."""

from __future__ import annotations

import copy
from typing import Any

from conftest import Api

RECORDS = "/api/v1/records"


def strip_member_ids(record: dict[str, Any]) -> dict[str, Any]:
    shaped = {k: v for k, v in record.items() if k != "_meta"}
    shaped["anggota"] = [{k: v for k, v in m.items() if k != "id"} for m in record["anggota"]]
    return shaped


async def test_healthz_needs_no_token_but_api_does(api: Api) -> None:
    async with api.session.get(api.base + "/healthz") as response:
        assert response.status == 200
    async with api.session.get(api.base + RECORDS) as response:
        assert response.status == 401
    async with api.session.get(
        api.base + RECORDS, headers={"Authorization": "Bearer not-a-token"}
    ) as response:
        assert response.status == 401


async def test_create_returns_stored_record_with_meta(api: Api, households_jsonl: list) -> None:
    household = households_jsonl[0]
    status, record = await api.call("POST", RECORDS, json=household)
    assert status == 201
    assert record["id"] == household["id"]
    assert strip_member_ids(record) == household
    assert all(len(m["id"]) <= 12 for m in record["anggota"])
    assert record["_meta"]["created_by"] == "admin"
    assert record["_meta"]["heads"]
    status, fetched = await api.call("GET", f"{RECORDS}/{household['id']}")
    assert status == 200 and fetched == record


async def test_create_without_id_gets_uuid7(api: Api, households_jsonl: list) -> None:
    household = {k: v for k, v in households_jsonl[1].items() if k != "id"}
    status, record = await api.call("POST", RECORDS, json=household)
    assert status == 201
    assert record["id"][14] == "7"


async def test_duplicate_id_is_409(api: Api, households_jsonl: list) -> None:
    assert (await api.call("POST", RECORDS, json=households_jsonl[0]))[0] == 201
    status, body = await api.call("POST", RECORDS, json=households_jsonl[0])
    assert status == 409
    assert body["id"] == households_jsonl[0]["id"]


async def test_invalid_fields_are_named_and_nothing_written(
    api: Api, households_jsonl: list
) -> None:
    bad = copy.deepcopy(households_jsonl[2])
    bad["no_kk"] = "12345"
    bad["kode_wilayah"] = "17x9"
    bad["anggota"][0]["nik"] = "1.70909E+15"
    bad["anggota"][0]["tanggal_lahir"] = "1988-02-30"
    status, body = await api.call("POST", RECORDS, json=bad)
    assert status == 422
    fields = {e["field"] for e in body["fields"]}
    assert {"no_kk", "kode_wilayah", "anggota[0].nik", "anggota[0].tanggal_lahir"} <= fields
    status, listing = await api.call("GET", RECORDS)
    assert listing["total"] == 0


async def test_malformed_json_is_400(api: Api) -> None:
    status, body = await api.call(
        "POST", RECORDS, data=b'{"no_kk": ', headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert "JSON" in body["error"]


async def test_unknown_and_malformed_ids_are_404(api: Api) -> None:
    assert (await api.call("GET", f"{RECORDS}/0190f6b2-0000-7000-8000-000000000000"))[0] == 404
    assert (await api.call("GET", f"{RECORDS}/not-a-uuid"))[0] == 404
    assert (await api.call("PATCH", f"{RECORDS}/not-a-uuid", json={"desil": 2}))[0] == 404
    assert (await api.call("GET", f"{RECORDS}/not-a-uuid/history"))[0] == 404


async def test_patch_top_level_and_partial_rumah(api: Api, households_jsonl: list) -> None:
    household = households_jsonl[3]
    await api.call("POST", RECORDS, json=household)
    status, record = await api.call(
        "PATCH", f"{RECORDS}/{household['id']}", json={"desil": 1, "rumah": {"atap": "seng"}}
    )
    assert status == 200
    assert record["desil"] == 1
    assert record["rumah"] == {**household["rumah"], "atap": "Seng"}
    assert record["alamat"] == household["alamat"]


async def test_patch_invalid_writes_nothing(api: Api, households_jsonl: list) -> None:
    household = households_jsonl[4]
    _, created = await api.call("POST", RECORDS, json=household)
    status, body = await api.call(
        "PATCH", f"{RECORDS}/{household['id']}", json={"desil": 0, "status_usulan": "unknown"}
    )
    assert status == 422
    assert {e["field"] for e in body["fields"]} == {"desil", "status_usulan"}
    _, after = await api.call("GET", f"{RECORDS}/{household['id']}")
    assert after == created


async def test_member_update_add_remove(api: Api, households_jsonl: list) -> None:
    household = next(h for h in households_jsonl if len(h["anggota"]) >= 3)
    _, record = await api.call("POST", RECORDS, json=household)
    first, second = record["anggota"][0], record["anggota"][1]
    newborn = {
        "nik": household["kode_wilayah"][:6] + "0101249001",
        "nama": "bayi baru",
        "tanggal_lahir": "2024-01-01",
        "jenis_kelamin": "L",
        "hubungan": "Anak",
        "pekerjaan": "Belum/Tidak Bekerja",
    }
    status, record = await api.call(
        "PATCH",
        f"{RECORDS}/{household['id']}",
        json={
            "anggota": {
                "update": {first["id"]: {"pekerjaan": "Petani"}},
                "remove": [second["id"]],
                "add": [newborn],
            }
        },
    )
    assert status == 200, record
    ids = [m["id"] for m in record["anggota"]]
    assert second["id"] not in ids
    assert ids[0] == first["id"]
    assert record["anggota"][0] == {**first, "pekerjaan": "Petani"}
    assert record["anggota"][-1]["nama"] == "BAYI BARU"
    assert len(record["anggota"]) == len(household["anggota"])


async def test_member_patch_errors_name_the_member(api: Api, households_jsonl: list) -> None:
    household = households_jsonl[5]
    _, record = await api.call("POST", RECORDS, json=household)
    member = record["anggota"][0]
    status, body = await api.call(
        "PATCH",
        f"{RECORDS}/{household['id']}",
        json={"anggota": {"update": {member["id"]: {"nik": "123"}}, "remove": ["nope"]}},
    )
    assert status == 422
    fields = {e["field"] for e in body["fields"]}
    assert f"anggota.update[{member['id']}].nik" in fields
    assert "anggota.remove[nope]" in fields


async def test_delete_is_a_tombstone_kept_in_history(api: Api, households_jsonl: list) -> None:
    household = households_jsonl[6]
    await api.call("POST", RECORDS, json=household)
    status, record = await api.call("DELETE", f"{RECORDS}/{household['id']}")
    assert status == 200 and record["_meta"]["deleted"] is True
    assert (await api.call("GET", f"{RECORDS}/{household['id']}"))[0] == 410
    assert (await api.call("PATCH", f"{RECORDS}/{household['id']}", json={"desil": 2}))[0] == 404
    _, listing = await api.call("GET", RECORDS)
    assert listing["total"] == 0
    _, history = await api.call("GET", f"{RECORDS}/{household['id']}/history")
    assert len(history["changes"]) == 2


async def test_history_says_who_when_where_what(api: Api, households_jsonl: list) -> None:
    household = households_jsonl[7]
    await api.call("POST", RECORDS, json=household)
    new_status = "ditolak" if household["status_usulan"] != "ditolak" else "draft"
    await api.call("PATCH", f"{RECORDS}/{household['id']}", json={"status_usulan": new_status})
    status, history = await api.call("GET", f"{RECORDS}/{household['id']}/history")
    assert status == 200
    created, proposed = history["changes"]
    assert created["operator"] == proposed["operator"] == "admin"
    assert proposed["fields"] == ["status_usulan"]
    assert created["node"] == proposed["node"] and len(created["node"]) == 32
    assert created["at"] <= proposed["at"]


async def test_search_by_nik_kk_name_and_filters(api: Api, households_jsonl: list) -> None:
    for household in households_jsonl[:30]:
        assert (await api.call("POST", RECORDS, json=household))[0] == 201
    target = households_jsonl[10]
    member = target["anggota"][-1]

    async def ids(query: str) -> set[str]:
        status, body = await api.call("GET", f"{RECORDS}?{query}&limit=500")
        assert status == 200
        assert body["total"] == len(body["items"])
        return {r["id"] for r in body["items"]}

    assert target["id"] in await ids(f"q={member['nik']}")
    assert await ids(f"q={target['no_kk']}") == {
        h["id"] for h in households_jsonl[:30] if h["no_kk"] == target["no_kk"]
    }
    name_part = member["nama"].split()[0].lower()
    expected = {
        h["id"]
        for h in households_jsonl[:30]
        if any(name_part.upper() in m["nama"] for m in h["anggota"])
    }
    assert await ids(f"q={name_part}") == expected
    kab = target["kode_wilayah"][:4]
    assert await ids(f"kode_wilayah={kab}&status_usulan={target['status_usulan']}") == {
        h["id"]
        for h in households_jsonl[:30]
        if h["kode_wilayah"].startswith(kab) and h["status_usulan"] == target["status_usulan"]
    }
    assert await ids("q=%25") == set()


async def test_paging(api: Api, households_jsonl: list) -> None:
    for household in households_jsonl[:12]:
        await api.call("POST", RECORDS, json=household)
    seen: list[str] = []
    for offset in (0, 5, 10):
        _, page = await api.call("GET", f"{RECORDS}?limit=5&offset={offset}")
        assert page["total"] == 12
        seen += [r["id"] for r in page["items"]]
    assert sorted(seen) == sorted(h["id"] for h in households_jsonl[:12])
    assert (await api.call("GET", f"{RECORDS}?limit=0"))[0] == 400
    assert (await api.call("GET", f"{RECORDS}?limit=abc"))[0] == 400
