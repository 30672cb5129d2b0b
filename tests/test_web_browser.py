"""The operator page in Debian's Chromium, on two certified nodes that sync over the LAN.

One browser and one pair of node processes serve the whole module: an operator logs in,
creates a household with three members through a validation error, finds it by NIK; an
edit on node A shows on node B; a conflict made on both nodes is settled in the page and
the choice reaches both; a proposal walks its whole path and an operator's approval is
refused by the server. Screenshots of every main page at 1366x768 and 360 px wide go to
test-artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from browser import (
    LAPTOP,
    PHONE,
    csrf_of,
    launch,
    log_in,
    record_id_in,
    screenshot,
    skip_reason,
)
from conftest import NodeProcess, generate, make_token, simpul_cli, start_node_process
from test_network_cli import create_network, enrol_by_file

from simpul.node.runtime import open_node

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

HEX_ID = re.compile(r"\b[0-9a-f]{12}\b")
# tables wider than the window that do not scroll inside a container within the window
# that shows it scrolls (headless Chromium hides scroll bars, as phones do: the page draws
# edge shadows as its background, simpul.css .scroll)
CUT_OFF_TABLES = """() => [...document.querySelectorAll('table')].filter(table => {
    if (table.getBoundingClientRect().right <= window.innerWidth + 0.5) return false;
    const box = table.closest('.scroll');
    if (!box) return true;
    const style = getComputedStyle(box);
    return !(box.getBoundingClientRect().right <= window.innerWidth + 0.5
             && (style.overflowX === 'auto' || style.overflowX === 'scroll')
             && box.scrollWidth > box.clientWidth
             && style.backgroundImage.includes('radial-gradient'));
}).map(table => (table.closest('section') || document.body).innerText.slice(0, 40))"""
SYNC_PERIOD = "2"
WAIT_SECONDS = 60
VILLAGE = "1709042001"


@dataclass
class Office:
    """Two synced nodes (A holds the network root), their API tokens, one browser."""

    a: NodeProcess
    b: NodeProcess
    a_dir: Path
    b_dir: Path
    tokens: dict[str, str]  # "a:ani" -> bearer token
    browser: Any
    http: aiohttp.ClientSession

    async def api(self, node: str, user: str, method: str, path: str, **kw: Any) -> Any:
        base = (self.a if node == "a" else self.b).url
        headers = {"Authorization": f"Bearer {self.tokens[f'{node}:{user}']}"}
        async with self.http.request(method, base + path, headers=headers, **kw) as response:
            assert response.status < 300, await response.text()
            return await response.json()

    async def restart_b(self) -> None:
        """Start node B again (new ports) and point A at its new sync port."""
        self.b = await start_node_process(self.b_dir, "--sync-period", SYNC_PERIOD)
        added = simpul_cli(self.a_dir, "peer", "add", f"127.0.0.1:{self.b.sync_port}")
        assert added.returncode == 0, added.stderr


async def stop(node: NodeProcess) -> None:
    if node.process.returncode is None:
        node.process.terminate()
        await asyncio.wait_for(node.process.wait(), timeout=30)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def office(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Office]:
    from playwright.async_api import async_playwright

    tmp = tmp_path_factory.mktemp("office")
    a_dir, b_dir = tmp / "admin", tmp / "desa"
    create_network(a_dir)
    enrol_by_file(a_dir, b_dir, tmp)
    tokens = {}
    for node, data_dir, users in (
        ("a", a_dir, [("ani", "operator"), ("vera", "verifier"), ("adi", "admin")]),
        ("b", b_dir, [("budi", "operator")]),
    ):
        for username, role in users:
            tokens[f"{node}:{username}"] = await make_token(data_dir, username, role)
    a = await start_node_process(a_dir, "--sync-period", SYNC_PERIOD)
    b = await start_node_process(b_dir, "--sync-period", SYNC_PERIOD)
    for data_dir, other in ((a_dir, b), (b_dir, a)):
        assert simpul_cli(data_dir, "peer", "add", f"127.0.0.1:{other.sync_port}").returncode == 0
    async with async_playwright() as playwright, aiohttp.ClientSession() as http:
        browser = await launch(playwright)
        office = Office(a, b, a_dir, b_dir, tokens, browser, http)
        try:
            yield office
        finally:
            await browser.close()
            for node in (office.a, office.b):
                if node.process.returncode is None:
                    node.kill()
                await node.process.wait()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `check` until true, for at most WAIT_SECONDS."""
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while not await check():
                await asyncio.sleep(0.3)
    except TimeoutError:
        raise AssertionError(f"not within {WAIT_SECONDS} s: {what}") from None


def nik(day: int, month: int, year: int, serial: int, female: bool = False) -> str:
    """A NIK of village 170904 whose digits 7-12 match the birth date."""
    return f"170904{day + 40 if female else day:02d}{month:02d}{year % 100:02d}{serial:04d}"


def household(kk_serial: int) -> dict[str, Any]:
    return {
        "kode_wilayah": VILLAGE,
        "no_kk": f"170904{kk_serial:010d}",
        "dusun": "Dusun Satu",
        "rt": "1",
        "rw": "2",
        "alamat": "Jl. Melati 3",
        "desil": 2,
        "status_usulan": "draft",
        "program": ["PKH"],
        "rumah": {"lantai": "Semen", "dinding": "Tembok", "atap": "Seng", "sumber_air": "PDAM"},
        "anggota": [
            {
                "nik": nik(21, 3, 1988, kk_serial % 10000),
                "nama": "Bambang Sutrisno",
                "tanggal_lahir": "1988-03-21",
                "jenis_kelamin": "L",
                "hubungan": "Kepala Keluarga",
                "pekerjaan": "Petani",
            }
        ],
    }


async def fill_member(page: Any, index: int, member: dict[str, str]) -> None:
    prefix = f"#f-anggota-{index}-"
    for field in ("nik", "nama", "tanggal_lahir", "pekerjaan"):
        await page.fill(prefix + field, member[field])
    await page.select_option(prefix + "jenis_kelamin", member["jenis_kelamin"])
    await page.select_option(prefix + "hubungan", member["hubungan"])


def by_id(page: Any, element_id: str) -> Any:
    return page.locator(f"[id='{element_id}']")


async def test_operator_creates_a_household_of_three_fixing_an_error_and_finds_it_by_nik(
    office: Office,
) -> None:
    page = await log_in(office.browser, office.a.url, "ani")
    await page.click("text=Data keluarga")
    await page.click("text=Tambah keluarga")
    data = household(1)
    for field in ("kode_wilayah", "no_kk", "dusun", "rt", "rw", "alamat"):
        await page.fill(f"#f-{field}", data[field])
    await page.fill("#f-desil", "2")
    await page.check("input[name=program][value=PKH]")
    for field, value in data["rumah"].items():
        await by_id(page, f"f-rumah.{field}").select_option(value)
    members = [
        data["anggota"][0],
        {
            "nik": nik(5, 7, 1990, 2, female=True),
            "nama": "Sri Wahyuni",
            "tanggal_lahir": "1990-07-05",
            "jenis_kelamin": "P",
            "hubungan": "Istri",
            "pekerjaan": "Pedagang",
        },
        {
            "nik": nik(12, 11, 2015, 3)[:15],  # one digit short: the page must say so
            "nama": "Dimas Saputra",
            "tanggal_lahir": "2015-11-12",
            "jenis_kelamin": "L",
            "hubungan": "Anak",
            "pekerjaan": "Pelajar",
        },
    ]
    await fill_member(page, 0, members[0])
    for index, member in enumerate(members[1:], start=1):
        await page.click("button[value=tambah]")
        await fill_member(page, index, member)
    await page.click("button.primary[value=simpan]")
    error = page.locator("#e-anggota-2-nik")
    assert "harus tepat 16 angka" in await error.inner_text()
    assert await page.get_attribute("#f-anggota-2-nik", "aria-invalid") == "true"
    assert await page.input_value("#f-anggota-1-nama") == "Sri Wahyuni"  # nothing typed is lost
    await screenshot(page, "form-error-1366")
    await page.fill("#f-anggota-2-nik", nik(12, 11, 2015, 3))
    await page.click("button.primary[value=simpan]")
    await page.wait_for_url("**/keluarga/*?ok=hh.saved")
    assert "Tersimpan" in await page.inner_text("main")
    rows = page.locator("section:has(h2:text('Anggota keluarga')) tbody tr")
    assert await rows.count() == 3
    assert "21 Maret 1988" in await page.inner_text("main")
    record_id = record_id_in(page.url)

    await page.click("text=Data keluarga")
    await page.fill("#q", nik(5, 7, 1990, 2, female=True))
    await page.click("form[role=search] button")
    results = page.locator("table.list tbody tr")
    assert await results.count() == 1
    await results.first.locator("a").click()
    assert record_id_in(page.url) == record_id
    await page.context.close()


async def test_edit_on_node_a_shows_on_node_b_after_sync(office: Office) -> None:
    created = await office.api("a", "ani", "POST", "/api/v1/records", json=household(2))
    page_a = await log_in(office.browser, office.a.url, "ani")
    await page_a.goto(f"{office.a.url}/keluarga/{created['id']}/ubah")
    await page_a.fill("#f-alamat", "Jl. Kenanga 12")
    await page_a.click("button.primary[value=simpan]")
    await page_a.wait_for_url("**?ok=hh.saved")
    page_b = await log_in(office.browser, office.b.url, "budi")

    async def shown_on_b() -> bool:
        response = await page_b.goto(f"{office.b.url}/keluarga/{created['id']}")
        return response.status == 200 and "Jl. Kenanga 12" in await page_b.inner_text("main")

    await eventually(shown_on_b, "node B's page shows the edit made on node A")
    history = await page_b.inner_text("section:has(h2:text('Riwayat perubahan'))")
    assert "ani" in history and "Alamat" in history
    assert "admin" in history  # node A by its display name, not a hex id
    assert not HEX_ID.search(history)
    for page in (page_a, page_b):
        await page.context.close()


async def conflicts_of(office: Office, node: str, user: str, record_id: str) -> list[dict]:
    record = await office.api(node, user, "GET", f"/api/v1/records/{record_id}")
    return record["_meta"]["conflicts"]


async def test_conflict_from_two_nodes_is_settled_in_the_page_on_both(office: Office) -> None:
    created = await office.api("a", "ani", "POST", "/api/v1/records", json=household(3))
    record_id = created["id"]

    async def on_b() -> bool:
        async with office.http.get(
            f"{office.b.url}/api/v1/records/{record_id}",
            headers={"Authorization": f"Bearer {office.tokens['b:budi']}"},
        ) as response:
            return response.status == 200

    await eventually(on_b, "node B received the new household")
    await stop(office.b)
    # the same field changed on both nodes while they cannot talk: a real conflict
    page_a = await log_in(office.browser, office.a.url, "ani")
    await page_a.goto(f"{office.a.url}/keluarga/{record_id}/ubah")
    await page_a.fill("#f-alamat", "Jl. Mawar 1")
    await page_a.click("button.primary[value=simpan]")
    await page_a.wait_for_url("**?ok=hh.saved")
    async with open_node(office.b_dir) as node_b:
        await node_b.records.update(record_id, lambda h: {**h, "alamat": "Jl. Anggrek 9"}, "budi")
    await office.restart_b()

    async def conflict_on_both() -> bool:
        seen = [
            await conflicts_of(office, n, u, record_id) for n, u in (("a", "ani"), ("b", "budi"))
        ]
        return all(seen)

    await eventually(conflict_on_both, "both nodes see the conflict")
    verifier = await log_in(office.browser, office.a.url, "vera")
    await verifier.click("text=Konflik")
    form = verifier.locator(f"form[action='/konflik/{record_id}']")
    text = await form.inner_text()
    assert "JL. MAWAR 1" not in text  # values are shown as stored, not upper-cased
    assert "Jl. Mawar 1" in text and "Jl. Anggrek 9" in text
    assert "ani" in text and "budi" in text
    assert "admin" in text and "desa" in text  # the devices by their display names
    assert not HEX_ID.search(text)
    await screenshot(verifier, "konflik-pilihan-1366")
    await verifier.set_viewport_size(PHONE)
    await screenshot(verifier, "konflik-pilihan-360")
    await form.locator("label.choice", has_text="Jl. Anggrek 9").locator("input").check()
    await form.locator("button[type=submit]").click()
    await verifier.wait_for_url("**/konflik?ok=conf.resolved")

    async def settled_on_both() -> bool:
        for node, user in (("a", "ani"), ("b", "budi")):
            record = await office.api(node, user, "GET", f"/api/v1/records/{record_id}")
            if record["_meta"]["conflicts"] or record["alamat"] != "Jl. Anggrek 9":
                return False
        return True

    await eventually(settled_on_both, "the verifier's choice reached both nodes")
    for page in (page_a, verifier):
        await page.context.close()


async def step(page: Any, base: str, record_id: str, target: str, reason: str = "") -> None:
    await page.goto(f"{base}/keluarga/{record_id}")
    if reason:
        await page.fill("#alasan", reason)
    await page.click(f"button[name=ke][value={target}]")
    await page.wait_for_url(f"**/keluarga/{record_id}")


async def test_proposal_walks_its_path_and_an_operator_cannot_approve(office: Office) -> None:
    base = office.a.url
    created = await office.api("a", "ani", "POST", "/api/v1/records", json=household(4))
    record_id = created["id"]
    operator = await log_in(office.browser, base, "ani")
    verifier = await log_in(office.browser, base, "vera")

    async def status() -> str:
        return (await office.api("a", "ani", "GET", f"/api/v1/records/{record_id}"))[
            "status_usulan"
        ]

    await step(operator, base, record_id, "diusulkan")
    assert await status() == "diusulkan"
    await verifier.goto(f"{base}/keluarga/{record_id}")
    await verifier.click("button[name=ke][value=dikembalikan]")  # no reason yet: refused
    assert "alasan" in (await verifier.inner_text("#usulan")).lower()
    assert await status() == "diusulkan"
    await step(verifier, base, record_id, "dikembalikan", "Foto rumah belum ada")
    await operator.goto(f"{base}/keluarga/{record_id}")
    assert "Foto rumah belum ada" in await operator.inner_text("#usulan")
    await step(operator, base, record_id, "diusulkan")
    await step(verifier, base, record_id, "diverifikasi")
    assert await status() == "diverifikasi"

    await operator.goto(f"{base}/keluarga/{record_id}")
    assert await operator.locator("button[value=disahkan]").count() == 0
    refused = await operator.request.post(
        f"{base}/keluarga/{record_id}/usulan",
        form={"csrf": await csrf_of(operator), "ke": "disahkan"},
        max_redirects=0,
    )
    assert refused.status == 403
    assert await status() == "diverifikasi"
    async with office.http.patch(
        f"{base}/api/v1/records/{record_id}",
        json={"status_usulan": "disahkan"},
        headers={"Authorization": f"Bearer {office.tokens['a:ani']}"},
    ) as api_refused:
        assert api_refused.status == 403

    await step(verifier, base, record_id, "disahkan")
    assert await status() == "disahkan"
    await screenshot(verifier, "keluarga-detail-1366")
    history = await office.api("a", "ani", "GET", f"/api/v1/records/{record_id}/history")
    moves = [c for c in history["changes"][1:] if "status_usulan" in c["fields"]]  # [0]: created
    movers = [c["operator"] for c in moves]
    assert movers == ["ani", "vera", "ani", "vera", "vera"]
    for page in (operator, verifier):
        await page.context.close()


MAIN_PAGES = {
    "beranda": "/",
    "keluarga": "/keluarga",
    "keluarga-baru": "/keluarga/baru",
    "usulan": "/usulan",
    "konflik": "/konflik",
    "duplikat": "/duplikat",
    "admin": "/admin",
}


@pytest.mark.parametrize("width", ["laptop", "phone"])
async def test_every_main_page_fits_the_screen_and_labels_every_input(
    office: Office, width: str
) -> None:
    viewport = LAPTOP if width == "laptop" else PHONE
    page = await log_in(office.browser, office.a.url, "adi", viewport)
    unlabelled = """() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.type !== 'hidden' && !e.closest('[aria-hidden=true]')
                     && e.getAttribute('aria-hidden') !== 'true')
        .filter(e => !(e.labels && e.labels.length) && !e.closest('label'))
        .map(e => e.name)"""
    for name, path in MAIN_PAGES.items():
        response = await page.goto(office.a.url + path)
        assert response.status == 200, path
        await screenshot(page, f"{name}-{viewport['width']}")
        assert await page.evaluate(unlabelled) == [], f"inputs without a label on {path}"
        overflow = await page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= viewport["width"], f"{path} is wider than the screen: {overflow}"
        assert await page.evaluate(CUT_OFF_TABLES) == [], f"a table is cut off on {path}"
    await page.context.close()
    login = await office.browser.new_page(viewport=viewport)
    await login.goto(f"{office.a.url}/masuk")
    await screenshot(login, f"masuk-{viewport['width']}")
    await login.close()


async def test_english_is_one_click_away(office: Office) -> None:
    page = await log_in(office.browser, office.a.url, "ani")
    await page.click("button:text('English')")
    assert await page.inner_text("h1") == "Home"
    await page.click("button:text('Bahasa Indonesia')")
    assert await page.inner_text("h1") == "Beranda"
    assert await page.evaluate("document.documentElement.lang") == "id"
    await page.context.close()


async def test_household_form_works_with_the_keyboard_alone(office: Office) -> None:
    page = await log_in(office.browser, office.a.url, "ani")
    await page.goto(f"{office.a.url}/keluarga/baru")

    async def focused() -> str:
        return await page.evaluate("document.activeElement.id || document.activeElement.name")

    for _ in range(40):  # from the top of the page, Tab reaches the first field
        await page.keyboard.press("Tab")
        if await focused() == "f-kode_wilayah":
            break
    assert await focused() == "f-kode_wilayah"
    data = household(5)
    member = data["anggota"][0]
    typed = [
        ("f-kode_wilayah", data["kode_wilayah"]),
        ("f-no_kk", data["no_kk"]),
        ("f-dusun", data["dusun"]),
        ("f-rt", data["rt"]),
        ("f-rw", data["rw"]),
        ("f-alamat", data["alamat"]),
        ("f-desil", "2"),
    ]
    for element_id, value in typed:
        assert await focused() == element_id
        await page.keyboard.type(value)
        await page.keyboard.press("Tab")
    await page.keyboard.press("Space")  # the first programme, PKH
    for _ in range(4):  # past the other programmes to the house
        await page.keyboard.press("Tab")
    for element_id, first_letters in (
        ("f-rumah.lantai", "Se"),
        ("f-rumah.dinding", "Te"),
        ("f-rumah.atap", "Se"),
        ("f-rumah.sumber_air", "PD"),
        ("f-anggota-0-nik", member["nik"]),
        ("f-anggota-0-nama", member["nama"]),
    ):
        assert await focused() == element_id
        await page.keyboard.type(first_letters)
        await page.keyboard.press("Tab")
    assert await focused() == "f-anggota-0-tanggal_lahir"
    await page.keyboard.type("21-03-1988")  # as operators write dates
    await page.keyboard.press("Tab")
    for element_id, first_letters in (
        ("f-anggota-0-jenis_kelamin", "La"),
        ("f-anggota-0-hubungan", "Ke"),
        ("f-anggota-0-pekerjaan", member["pekerjaan"]),
    ):
        assert await focused() == element_id
        await page.keyboard.type(first_letters)
        if element_id != "f-anggota-0-pekerjaan":
            await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")  # Enter in a field saves the form
    await page.wait_for_url("**?ok=hh.saved")
    saved = await office.api("a", "ani", "GET", f"/api/v1/records/{record_id_in(page.url)}")
    assert saved["program"] == ["PKH"]
    assert saved["rumah"] == data["rumah"]
    assert saved["anggota"][0]["tanggal_lahir"] == "1988-03-21"
    assert saved["anggota"][0]["hubungan"] == "Kepala Keluarga"
    await page.context.close()


async def test_village_names_show_on_beranda_and_the_list(office: Office, tmp_path: Path) -> None:
    header, *rows = csv.reader(io.StringIO(generate(40, "csv", seed=29)))
    kode, desa = header.index("KODE WILAYAH"), header.index("DESA/KELURAHAN")
    ours = [r for r in rows if r[kode].startswith("1709")]  # node A's write scope
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *ours])
    (tmp_path / "desa.csv").write_text(out.getvalue(), encoding="utf-8")
    imported = simpul_cli(office.a_dir, "import", str(tmp_path / "desa.csv"), "--json")
    assert imported.returncode == 0, imported.stderr
    village, name = ours[0][kode], ours[0][desa]
    page = await log_in(office.browser, office.a.url, "ani")
    await page.goto(office.a.url + "/")
    assert f"{name} ({village})" in await page.inner_text("main")
    assert "Dinsos Uji" in await page.inner_text("#network-name")
    await page.goto(f"{office.a.url}/keluarga?desa={village}")
    cells = page.locator("table.list tbody td:nth-child(3)")
    assert await cells.count() > 0
    assert set(await cells.all_inner_texts()) == {f"{name} ({village})"}
    option = page.locator(f"#desa option[value='{village}']")
    assert await option.inner_text() == f"{name} ({village})"
    await screenshot(page, "keluarga-nama-desa-1366")
    await page.set_viewport_size(PHONE)
    await screenshot(page, "keluarga-nama-desa-360")
    assert await page.evaluate(CUT_OFF_TABLES) == []
    await page.locator("table.list tbody a").first.click()
    heading = await page.inner_text("h1")
    assert "KK " in heading and heading.split(" KK ")[0].strip()  # the head's name first
    assert await page.evaluate(CUT_OFF_TABLES) == []
    await screenshot(page, "keluarga-detail-360")
    await page.context.close()


async def test_the_form_says_wajib_diisi_keeps_the_typed_date_and_refuses_a_duplicate_kk(
    office: Office,
) -> None:
    held = await office.api("a", "ani", "POST", "/api/v1/records", json=household(6))
    page = await log_in(office.browser, office.a.url, "ani")
    await page.goto(f"{office.a.url}/keluarga/baru")
    data = household(6)
    await page.fill("#f-kode_wilayah", data["kode_wilayah"])
    await page.fill("#f-anggota-0-nama", "Siti Aminah")
    await page.fill("#f-anggota-0-tanggal_lahir", "31-02-1988")
    await page.click("button.primary[value=simpan]")
    assert await page.inner_text("#e-no_kk") == "wajib diisi"
    assert await page.inner_text("#e-anggota-0-jenis_kelamin") == "wajib diisi"
    assert (
        await page.inner_text("#e-anggota-0-tanggal_lahir") == "31-02-1988 bukan tanggal yang ada"
    )
    assert await page.input_value("#f-anggota-0-tanggal_lahir") == "31-02-1988"
    assert await page.input_value("#f-anggota-0-nama") == "Siti Aminah"
    await screenshot(page, "form-wajib-diisi-1366")

    for field in ("no_kk", "dusun", "rt", "rw", "alamat"):
        await page.fill(f"#f-{field}", data[field])
    await page.fill("#f-desil", "2")
    for field, value in data["rumah"].items():
        await by_id(page, f"f-rumah.{field}").select_option(value)
    member = {**data["anggota"][0], "nik": nik(21, 3, 1988, 7001), "tanggal_lahir": "21-03-1988"}
    await fill_member(page, 0, member)
    await page.click("button.primary[value=simpan]")
    alert = page.locator("#duplikat")
    assert f"No. KK {data['no_kk']} sudah tercatat di keluarga" in await alert.inner_text()
    assert await page.input_value("#f-anggota-0-nik") == member["nik"]
    await page.set_viewport_size(PHONE)
    await screenshot(page, "form-duplikat-360")
    await alert.locator("a").click()
    assert record_id_in(page.url) == held["id"]
    await page.context.close()
