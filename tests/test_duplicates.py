"""Duplicate households (issue 14): a NIK or No. KK another live household holds is refused
on the API, the form and import, naming that household; duplicates that arrive by sync are
listed on GET /api/v1/duplicates and the Duplikat page, where a verifier merges them or
keeps both."""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
from conftest import NodeProcess, generate, simpul_cli, start_node_process
from test_lan_sync import Client, eventually, two_synced_nodes
from test_web_access import CSRF, PASSWORD, Site
from test_web_access import site as site

from simpul.node.runtime import open_node
from simpul.sync import duplicates

RECORDS = "/api/v1/records"


def same_family_elsewhere(household: dict[str, Any]) -> dict[str, Any]:
    """The same family as another village registered it: its own id, same KK and NIKs."""
    twin = {k: v for k, v in copy.deepcopy(household).items() if k not in ("id", "_meta")}
    twin["anggota"] = [{k: v for k, v in m.items() if k != "id"} for m in twin["anggota"]]
    twin["alamat"] = "Jl. Lain No. 1"
    return twin


async def api(site: Site, http: aiohttp.ClientSession, method: str, path: str, **kw: Any):
    headers = {"Authorization": f"Bearer {site.tokens['verifier']}"}
    async with http.request(method, site.base + path, headers=headers, **kw) as response:
        return response.status, await response.json()


async def test_a_new_household_without_status_starts_as_a_draft(
    site: Site, households_jsonl: list
) -> None:
    household = {k: v for k, v in households_jsonl[3].items() if k != "status_usulan"}
    async with aiohttp.ClientSession() as http:
        status, record = await api(site, http, "POST", RECORDS, json=household)
    assert (status, record["status_usulan"]) == (201, "draft")


async def test_api_refuses_a_kk_or_nik_another_household_holds_and_names_it(
    site: Site, households_jsonl: list
) -> None:
    held = site.record
    async with aiohttp.ClientSession() as http:
        status, body = await api(site, http, "POST", RECORDS, json=same_family_elsewhere(held))
        assert (status, body["id"], body["field"]) == (409, held["id"], "no_kk")
        assert held["no_kk"] in body["error"] and held["anggota"][0]["nama"] in body["error"]

        other = next(h for h in households_jsonl if h["no_kk"] != held["no_kk"])
        other = {**copy.deepcopy(other), "kode_wilayah": held["kode_wilayah"]}
        other.pop("id", None)
        moved = {**held["anggota"][1]}
        moved.pop("id")
        other["anggota"] = [*other["anggota"], moved]
        status, body = await api(site, http, "POST", RECORDS, json=other)
        assert (status, body["id"], body["field"], body["value"]) == (
            409,
            held["id"],
            "nik",
            moved["nik"],
        )

        other["anggota"].pop()
        status, created = await api(site, http, "POST", RECORDS, json=other)
        assert status == 201
        patch = {"anggota": {"add": [moved]}}
        status, body = await api(site, http, "PATCH", f"{RECORDS}/{created['id']}", json=patch)
        assert (status, body["id"]) == (409, held["id"])
        status, body = await api(site, http, "PATCH", f"{RECORDS}/{created['id']}",
                                 json={"no_kk": held["no_kk"]})  # fmt: skip
        assert (status, body["field"]) == (409, "no_kk")

        status, listing = await api(site, http, "GET", f"{RECORDS}?limit=50")
        assert listing["total"] == 2  # nothing refused was written
        status, found = await api(site, http, "GET", "/api/v1/duplicates")
        assert (status, found["items"]) == (200, [])

        # a deleted household's identifiers are free again
        assert (await api(site, http, "DELETE", f"{RECORDS}/{held['id']}"))[0] == 200
        status, _ = await api(site, http, "POST", RECORDS, json=same_family_elsewhere(held))
        assert status == 201


async def test_the_form_refuses_a_duplicate_kk_with_a_link_to_the_other_household(
    site: Site,
) -> None:
    held = site.record
    async with site.browser() as http:
        csrf = await site.log_in(http, "ani")
        form: dict[str, str] = {"csrf": csrf, "aksi": "simpan"}
        for field in ("kode_wilayah", "no_kk", "dusun", "rt", "rw", "alamat"):
            form[field] = str(held[field])
        form["desil"] = str(held["desil"])
        for field, value in held["rumah"].items():
            form[f"rumah.{field}"] = value
        form["anggota_n"] = "1"
        member = held["anggota"][0]
        for field in ("nik", "nama", "jenis_kelamin", "hubungan", "pekerjaan"):
            form[f"anggota-0-{field}"] = member[field]
        year, month, day = member["tanggal_lahir"].split("-")
        form["anggota-0-tanggal_lahir"] = f"{day}-{month}-{year}"
        async with http.post(f"{site.base}/keluarga/baru", data=form) as response:
            body = await response.text()
        assert response.status == 409
        assert f'href="/keluarga/{held["id"]}"' in body
        assert f"No. KK {held['no_kk']} sudah tercatat di keluarga" in body
        assert f'value="{member["nik"]}"' in body  # what was typed is still there
    _, total = await site.node.records.search(limit=5)
    assert total == 1


def test_import_refuses_each_row_whose_nik_another_household_holds(tmp_path: Path) -> None:
    header, *rows = csv.reader(io.StringIO(generate(30, "csv")))
    nik, kk, ident = header.index("NIK"), header.index("NOMOR KK"), header.index("ID KELUARGA")

    def write(path: Path, chosen: list[list[str]]) -> Path:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([header, *chosen])
        path.write_text(out.getvalue(), encoding="utf-8")
        return path

    data = tmp_path / "node"
    first = json.loads(simpul_cli(data, "import", str(write(tmp_path / "a.csv", rows)), "--json")
                       .stdout)  # fmt: skip
    assert first["rejected"] == []
    # a second village's file: a new family, one of whose members is already elsewhere,
    # and the same family as the first file's first household under another id
    newcomer = [r for r in rows if r[kk] == rows[-1][kk]]
    fresh = json.loads(generate(31, "jsonl").splitlines()[-1])  # a KK not in the first file
    new_rows = []
    for index, member in enumerate(newcomer):
        cells = list(member)
        cells[ident], cells[kk] = "", fresh["no_kk"]
        if index:  # all but the first person are new
            cells[nik] = cells[nik][:-4] + f"{8000 + index}"
        new_rows.append(cells)
    twin = [list(r) for r in rows if r[kk] == rows[0][kk]]
    for cells in twin:
        cells[ident] = "0190a8e4-0000-7000-8000-000000000001"
    second = json.loads(
        simpul_cli(data, "import", str(write(tmp_path / "b.csv", new_rows + twin)), "--json").stdout
    )
    refused = {r["line"]: r["reason"] for r in second["rejected"]}
    assert refused[2].startswith(f"NIK {newcomer[0][nik]} is already in household ")
    twin_lines = range(2 + len(new_rows), 2 + len(new_rows) + len(twin))
    for line in twin_lines:
        assert refused[line].startswith(f"NOMOR KK {rows[0][kk]} is already held by household ")
    assert set(refused) == {2, *twin_lines}


async def test_two_nodes_that_registered_one_family_offline_both_list_it_after_sync(
    office_village: tuple[Path, Path], node_processes: list[NodeProcess], households_jsonl: list
) -> None:
    admin, desa, admin_token, desa_token = await two_synced_nodes(office_village)
    a = await start_node_process(admin, "--sync-period", "2")
    b = await start_node_process(desa, "--sync-period", "2")
    node_processes += [a, b]
    family = next(h for h in households_jsonl if h["kode_wilayah"].startswith("1709"))
    async with aiohttp.ClientSession() as http:
        on_a, on_b = Client(http, a, admin_token), Client(http, b, desa_token)
        first = await on_a.call("POST", RECORDS, json=family)  # both offline: no peers yet
        second = await on_b.call("POST", RECORDS, json=same_family_elsewhere(family))
        assert simpul_cli(admin, "peer", "add", f"127.0.0.1:{b.sync_port}").returncode == 0
        assert simpul_cli(desa, "peer", "add", f"127.0.0.1:{a.sync_port}").returncode == 0

        async def both_listed() -> bool:
            listed = [await c.call("GET", "/api/v1/duplicates") for c in (on_a, on_b)]
            return all(found["total"] == 1 for found in listed)

        await eventually(both_listed, "both nodes list the duplicate family")
        expected = sorted((first["id"], second["id"]))
        for client in (on_a, on_b):
            pair = (await client.call("GET", "/api/v1/duplicates"))["items"][0]
            assert sorted(h["id"] for h in pair["households"]) == expected
            assert f"No. KK {family['no_kk']}" in pair["shared"]
        for node in (a, b):
            page = await duplikat_page(node)
            assert f'href="/keluarga/{first["id"]}"' in page
            assert f'href="/keluarga/{second["id"]}"' in page


async def duplikat_page(node: NodeProcess) -> str:
    """The Duplikat page as the admin (make_token's account) sees it."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{node.url}/masuk") as response:
            token = CSRF.search(await response.text()).group(1)
        form = {"csrf": token, "username": "admin", "password": PASSWORD}
        async with http.post(f"{node.url}/masuk", data=form) as response:
            assert response.status == 200
        async with http.get(f"{node.url}/duplikat") as response:
            assert response.status == 200
            return await response.text()


async def test_a_verifier_merges_a_pair_or_keeps_both(site: Site, households_jsonl: list) -> None:
    held = site.record
    node = site.node
    # as sync would bring it: written without the duplicate check
    twin = same_family_elsewhere(held)
    extra = twin["anggota"][0]
    twin["anggota"] = [*twin["anggota"], {**extra, "nik": extra["nik"][:-4] + "8999"}]
    copy_of = await node.records.create({**twin, "status_usulan": "draft"}, "sync")
    async with site.browser() as http:
        csrf = await site.log_in(http, "ani")
        page = await (await http.get(f"{site.base}/duplikat")).text()
        assert "Hanya verifikator atau admin" in page
        form = {"csrf": csrf, "simpan": held["id"], "lain": copy_of["id"]}
        async with http.post(f"{site.base}/duplikat/gabung", data=form) as response:
            assert response.status == 403
    async with site.browser() as http:
        csrf = await site.log_in(http, "vera")
        form = {"csrf": csrf, "simpan": held["id"], "lain": copy_of["id"]}
        async with http.post(f"{site.base}/duplikat/gabung", data=form) as response:
            assert response.status == 200 and "Keluarga digabungkan." in await response.text()
    merged = await node.records.get(held["id"])
    assert len(merged["anggota"]) == len(held["anggota"]) + 1
    assert (await node.records.get(copy_of["id"]))["_meta"]["deleted"]

    another = await node.records.create({**twin, "status_usulan": "draft"}, "sync")
    async with site.browser() as http:
        csrf = await site.log_in(http, "vera")
        form = {"csrf": csrf, "simpan": held["id"], "lain": another["id"]}
        async with http.post(f"{site.base}/duplikat/biarkan", data=form) as response:
            assert "Ditandai sebagai dua keluarga." in await response.text()
            assert "Tidak ada keluarga ganda." in await response.text()


async def test_import_allow_duplicates_takes_them_and_lists_them(tmp_path: Path) -> None:
    header, *rows = csv.reader(io.StringIO(generate(12, "csv")))
    ident = header.index("ID KELUARGA")
    kk = header.index("NOMOR KK")
    twin = [list(r) for r in rows if r[kk] == rows[0][kk]]
    for cells in twin:
        cells[ident] = "0190a8e4-0000-7000-8000-000000000002"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows, *twin])
    path = tmp_path / "h.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    data = tmp_path / "node"
    refused = json.loads(simpul_cli(data, "import", str(path), "--json").stdout)
    assert (refused["households"], len(refused["rejected"])) == (12, len(twin))
    taken = simpul_cli(data, "import", str(path), "--json", "--allow-duplicates")
    summary = json.loads(taken.stdout)
    assert (summary["created"], summary["unchanged"], summary["rejected"]) == (1, 12, [])
    async with open_node(data) as node:
        listed = await duplicates.pairs(node.db)
    niks = [f"NIK {cells[header.index('NIK')]}" for cells in twin]
    assert [p.shared for p in listed] == [(f"No. KK {rows[0][kk]}", *niks)]
