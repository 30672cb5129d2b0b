"""The operator page's office pieces (issue 14) over HTTP: the Excel download, operators
and API tokens on the Admin page, and the form's messages in the page's words."""

from __future__ import annotations

import html
import io
import re

from openpyxl import load_workbook
from test_web_access import Site
from test_web_access import site as site

from simpul.node.web_text import Text


async def test_the_list_downloads_as_a_workbook_the_import_reads_back(site: Site) -> None:
    record = site.record
    async with site.browser() as http:
        await site.log_in(http, "ani")
        page = await (await http.get(f"{site.base}/keluarga")).text()
        assert 'href="/ekspor.xlsx?desa=&amp;status="' in page
        url = f"{site.base}/ekspor.xlsx?desa={record['kode_wilayah']}&status=draft"
        async with http.get(url) as response:
            assert response.status == 200
            assert "keluarga-" in response.headers["Content-Disposition"]
            body = await response.read()
        async with http.get(f"{site.base}/ekspor.xlsx?status=disahkan") as response:
            empty = load_workbook(io.BytesIO(await response.read()), read_only=True)
    rows = list(load_workbook(io.BytesIO(body), read_only=True).worksheets[0].values)
    header = rows[0]
    assert len(rows) == 1 + len(record["anggota"])
    assert {r[header.index("ID KELUARGA")] for r in rows[1:]} == {record["id"]}
    assert [r[header.index("NIK")] for r in rows[1:]] == [m["nik"] for m in record["anggota"]]
    assert len(list(empty.worksheets[0].values)) == 1  # the header only


async def test_admin_disables_resets_and_withdraws_on_the_page(site: Site) -> None:
    async with site.browser() as http:
        csrf = await site.log_in(http, "adi")
        page = await (await http.get(f"{site.base}/admin")).text()
        assert "`" not in page  # no raw markup
        token_ids = re.findall(r'data-token="([0-9a-f]{12})"', page)
        assert len(token_ids) == 3
        assert site.tokens["operator"] not in page

        form = {"csrf": csrf}
        async with http.post(f"{site.base}/admin/operator/ani/nonaktifkan", data=form) as done:
            text = html.unescape(await done.text())
            assert "Operator ani dinonaktifkan." in text
        assert await site.node.operators.by_token(site.tokens["operator"]) is None
        assert await site.node.operators.check_login("ani", "kata-sandi-rahasia") is None
        async with http.post(f"{site.base}/admin/operator/adi/nonaktifkan", data=form) as own:
            assert own.status == 422  # not one's own account
        async with http.post(f"{site.base}/admin/operator/ani/aktifkan", data=form) as done:
            assert "Operator ani aktif lagi." in html.unescape(await done.text())

        reset = {"csrf": csrf, "password": "sandi-baru-123"}
        async with http.post(f"{site.base}/admin/operator/ani/sandi", data=reset) as done:
            assert "Kata sandi ani diganti." in await done.text()
        assert await site.node.operators.check_login("ani", "sandi-baru-123") is not None
        short = {"csrf": csrf, "password": "pendek"}
        async with http.post(f"{site.base}/admin/operator/ani/sandi", data=short) as refused:
            assert refused.status == 422

        vera = next(t for t in await site.node.operators.tokens() if t.username == "vera")
        async with http.post(f"{site.base}/admin/token/{vera.id}/tarik", data=form) as done:
            assert f"Token {vera.id} milik vera ditarik." in await done.text()
        assert await site.node.operators.by_token(site.tokens["verifier"]) is None
        assert await site.node.operators.by_token(site.tokens["admin"]) is not None


async def test_the_form_says_wajib_diisi_keeps_typed_dates_and_names_sexes(site: Site) -> None:
    async with site.browser() as http:
        csrf = await site.log_in(http, "ani")
        form = {
            "csrf": csrf,
            "aksi": "simpan",
            "kode_wilayah": site.record["kode_wilayah"],
            "no_kk": "",
            "rt": "",
            "anggota_n": "1",
            "anggota-0-nama": "Siti Aminah",
            "anggota-0-tanggal_lahir": "31-02-1988",
            "anggota-0-jenis_kelamin": "X",
        }
        async with http.post(f"{site.base}/keluarga/baru", data=form) as response:
            assert response.status == 422
            page = html.unescape(await response.text())
    error = re.compile(r'<p class="error" id="e-([^"]+)">([^<]*)</p>')
    errors = dict(error.findall(page))
    assert errors["no_kk"] == "wajib diisi"
    assert errors["rt"] == "wajib diisi"
    assert errors["anggota-0-tanggal_lahir"] == "31-02-1988 bukan tanggal yang ada"
    assert errors["anggota-0-jenis_kelamin"] == "pilih salah satu: Laki-laki, Perempuan"
    assert 'value="31-02-1988"' in page and 'value="Siti Aminah"' in page
    assert "1988-02-31" not in page


def test_validation_words_in_english_too() -> None:
    text = Text("en")
    assert text.validation("expected one of L, P; got 'X'") == "choose one of: Male, Female"
    assert text.validation("expected exactly 16 digits, got ''") == "is required"
    assert text.validation("1988-02-31 is not a real date") == "31-02-1988 is not a date"
