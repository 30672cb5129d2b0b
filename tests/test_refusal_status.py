"""A refusal is never "synced": entries one node refuses of another show on every status
surface of both (Beranda in red, `simpul status --json`, `simpul peers`, /metrics,
`simpul doctor`), and everything else keeps syncing.

The refused entry is written the way an older Simpul let a node write it: a household
outside the node's scope, stored before its store knew the scope (joining now refuses
that, tests/test_join_scope.py); nothing else is faked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from browser import launch, log_in, screenshot, skip_reason
from conftest import NodeProcess, make_token, simpul_cli, start_node_process
from test_lan_sync import Client, eventually

from simpul.node.runtime import open_node


def in_region(household: dict[str, Any], kode: str) -> dict[str, Any]:
    return {**{k: v for k, v in household.items() if k != "id"}, "kode_wilayah": kode}


async def write_outside_scope(data_dir: Path, household: dict[str, Any]) -> str:
    async with open_node(data_dir) as node:
        node.records.scope = None  # as a node made before joining checked its records
        return (await node.records.create(household, "lama"))["id"]


def status(data_dir: Path) -> dict[str, Any]:
    result = simpul_cli(data_dir, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_a_refused_entry_is_red_everywhere_and_the_rest_still_syncs(
    office_village: tuple[Path, Path], node_processes: list[NodeProcess], households_jsonl: list
) -> None:
    office, village = office_village  # network and certificates of scope 1709
    outside = await write_outside_scope(village, in_region(households_jsonl[0], "1702032007"))
    tokens = await make_token(office), await make_token(village)
    a = await start_node_process(office, "--sync-period", "2")
    b = await start_node_process(village, "--sync-period", "2")
    node_processes += [a, b]
    assert simpul_cli(office, "peer", "add", f"127.0.0.1:{b.sync_port}").returncode == 0
    assert simpul_cli(village, "peer", "add", f"127.0.0.1:{a.sync_port}").returncode == 0
    village_id = status(village)["node_id"]
    async with aiohttp.ClientSession() as http:
        on_a, on_b = Client(http, a, tokens[0]), Client(http, b, tokens[1])
        inside = await on_b.call(
            "POST", "/api/v1/records", json=in_region(households_jsonl[1], "1709042001")
        )

        async def inside_arrived() -> bool:
            return inside["id"] in await on_a.heads()

        await eventually(inside_arrived, "the in-scope household after the refused one arrives")

        async def both_sides_see_it() -> bool:
            facts = [await c.call("GET", "/api/v1/status") for c in (on_a, on_b)]
            return all(f["peers"] and f["peers"][0]["state"] == "refused" for f in facts)

        await eventually(both_sides_see_it, "both nodes show the peer as refused")
        assert outside not in await on_a.heads()
        facts_a = await on_a.call("GET", "/api/v1/status")
        assert facts_a["refused"] == {village_id: {"scope": 1}}
        assert facts_a["peers"][0]["refused"] == {"scope": 1}
        facts_b = await on_b.call("GET", "/api/v1/status")
        assert facts_b["peers"][0]["refused_by_peer"] == {"scope": 1}
        metrics = await (await http.get(a.url + "/metrics")).text()
        assert f'simpul_refused_entries{{origin="{village_id}",reason="scope"}} 1' in metrics
        assert 'simpul_peers{state="refused"} 1' in metrics
        # a later edit on the village still arrives: nothing is stuck behind the refusal
        await on_b.call("PATCH", f"/api/v1/records/{inside['id']}", json={"alamat": "Jl. Baru 3"})

        async def edit_arrived() -> bool:
            record = await on_a.call("GET", f"/api/v1/records/{inside['id']}")
            return record["alamat"] == "Jl. Baru 3"

        await eventually(edit_arrived, "a later edit arrives")
    cli_facts = status(office)  # `simpul status --json` shows the same as the API
    assert cli_facts["refused"] == {village_id: {"scope": 1}}
    assert [p["state"] for p in cli_facts["peers"]] == ["refused"]
    assert [p["refused_by_peer"] for p in status(village)["peers"]] == [{"scope": 1}]
    for data_dir, side in ((office, "refused here"), (village, "refuses")):
        listed = simpul_cli(data_dir, "peers")
        assert "refused" in listed.stdout and "scope 1" in listed.stdout, listed.stdout
        doctor = simpul_cli(data_dir, "doctor")
        assert doctor.returncode == 1 and side in doctor.stdout, doctor.stdout
    if skip_reason():
        pytest.skip(skip_reason())
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await launch(playwright)
        for node, name in ((a, "kantor"), (b, "desa")):
            page = await log_in(browser, node.url, "admin")
            peer = await page.locator(".peer-refused").first.inner_text()
            assert "ada data yang ditolak" in peer and "di luar wilayah" in peer, peer
            color = await page.locator(".peer-refused .dot").first.evaluate(
                "e => getComputedStyle(e).backgroundColor"
            )
            assert color == "rgb(164, 0, 15)"  # --bad
            await screenshot(page, f"refusal-beranda-{name}")
        alert = await (await log_in(browser, a.url, "admin")).locator("#ditolak").inner_text()
        assert "1 perubahan dari perangkat desa ditolak" in alert, alert
        await browser.close()
