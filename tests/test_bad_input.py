"""Hand-made bad input from a neighbour or a careless client, over real HTTP on loopback:
text that is not Unicode, absurd nesting, control and bidi characters, a resolve of the
member list itself. Each is answered 400 or 422 with a reason, never 500, and nothing is
stored.
"""

from __future__ import annotations

import copy
import unicodedata
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from conftest import Api, make_token
from hypothesis import given
from hypothesis import strategies as st

from simpul.node.runtime import open_node
from simpul.node.server import build_app
from simpul.node.usb_watcher import UsbWatcher
from simpul.sync.household import ValidationError, validate_household

RECORDS = "/api/v1/records"
HIDDEN = ["\x00", "\x1b", "\u202e", "\u2066", "\u200f", "\u200b", "\ufeff", "\u2028"]


async def raw(api: Api, method: str, path: str, body: bytes, **headers: str) -> tuple[int, Any]:
    return await api.call(method, path, data=body, headers=headers)


async def test_lone_surrogates_and_deep_nesting_answer_400(
    api: Api, households_jsonl: list
) -> None:
    household = households_jsonl[0]
    surrogate = b'{"alamat": "Jl. \\ud800 Mawar"}'
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_object = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    for body in (surrogate, deep, deep_object):
        status, answer = await raw(api, "POST", RECORDS, body)
        assert status == 400, answer
        assert "error" in answer
    assert (await api.call("POST", RECORDS, json=household))[0] == 201
    path = f"{RECORDS}/{household['id']}"
    for body in (surrogate, deep):
        assert (await raw(api, "PATCH", path, body))[0] == 400
    status, stored = await api.call("GET", path)
    assert status == 200 and stored["alamat"] == household["alamat"]
    status, listed = await api.call("GET", RECORDS)
    assert status == 200 and listed["total"] == 1


async def test_forms_that_are_not_text_answer_400(api: Api) -> None:
    """Invalid UTF-8 in a form (urlencoded or multipart) or an unknown charset."""
    forms = [
        (b"username=\xed\xa0\x80&password=x&csrf=x", "application/x-www-form-urlencoded"),
        (
            b'--b\r\nContent-Disposition: form-data; name="username"\r\n\r\n'
            b"\xed\xa0\x80\r\n--b--\r\n",
            "multipart/form-data; boundary=b",
        ),
        (b"username=a&password=x&csrf=x", "application/x-www-form-urlencoded; charset=nope"),
    ]
    async with aiohttp.ClientSession() as http:
        for body, content_type in forms:
            headers = {"Content-Type": content_type}
            async with http.post(f"{api.base}/masuk", data=body, headers=headers) as response:
                assert response.status == 400, await response.text()
                assert "Permintaan tidak bisa dibaca" in await response.text()


async def test_control_and_bidi_characters_are_refused_naming_the_field(
    api: Api, households_jsonl: list
) -> None:
    household = households_jsonl[1]
    for char in HIDDEN:
        bad = copy.deepcopy(household)
        bad["anggota"][0]["nama"] = f"SITI{char}AMINAH"
        bad["alamat"] = f"Jl. Mawar{char} 3"
        status, answer = await api.call("POST", RECORDS, json=bad)
        assert status == 422, (char, answer)
        fields = {f["field"] for f in answer["fields"]}
        assert fields == {"alamat", "anggota[0].nama"}, answer
        assert f"U+{ord(char):04X}" in answer["fields"][0]["message"]
    assert (await api.call("GET", RECORDS))[1]["total"] == 0
    # a line break: refused in a name, kept (as LF) in an address a spreadsheet cell broke
    broken = copy.deepcopy(household)
    broken["anggota"][0]["nama"] = "SITI\nAMINAH"
    status, answer = await api.call("POST", RECORDS, json=broken)
    assert status == 422 and [f["field"] for f in answer["fields"]] == ["anggota[0].nama"]
    household = {**household, "alamat": "Jl. Anggrek\r\nNo. 112"}
    status, stored = await api.call("POST", RECORDS, json=household)
    assert status == 201 and stored["alamat"] == "Jl. Anggrek\nNo. 112", stored
    path = f"{RECORDS}/{household['id']}"
    status, answer = await api.call("PATCH", path, json={"dusun": "Krajan\u202e"})
    assert status == 422 and answer["fields"][0]["field"] == "dusun"
    # the reason of a returned proposal may run over lines, and keeps them
    note = {"status_usulan": "dikembalikan", "catatan_usulan": "KK buram\r\nfoto ulang"}
    assert (await api.call("PATCH", path, json={"status_usulan": "diusulkan"}))[0] == 200
    status, answer = await api.call("PATCH", path, json=note)
    assert status == 200 and answer["catatan_usulan"] == "KK buram\nfoto ulang", answer
    status, answer = await api.call("PATCH", path, json={"catatan_usulan": "a\x00b"})
    assert status == 422 and answer["fields"][0]["field"] == "catatan_usulan"


REFUSED = {"Cc", "Cf", "Cs", "Zl", "Zp"}


@given(st.text(min_size=1, max_size=20))
def test_a_stored_name_never_holds_a_hidden_character(households_jsonl: list, name: str) -> None:
    """Whatever text a client sends as a name, what validation lets through is visible."""
    household = copy.deepcopy(households_jsonl[2])
    household["anggota"][0]["nama"] = name
    try:
        stored = validate_household(household)["anggota"][0]["nama"]
    except ValidationError as exc:
        assert exc.errors and all(e.field for e in exc.errors)
        return
    assert not any(unicodedata.category(c) in REFUSED for c in stored)


async def test_a_search_term_with_a_nul_is_400(api: Api, households_jsonl: list) -> None:
    """Found by tests/test_api_fuzz.py: SQLite's full-text query parser stops at a NUL."""
    assert (await api.call("POST", RECORDS, json=households_jsonl[4]))[0] == 201
    for query in ("?q=SIT%00I", "?q=12%00", "?kode_wilayah=17%1b", "?q=" + "A" * 201):
        status, answer = await api.call("GET", RECORDS + query)
        assert status == 400 and "error" in answer, (query, answer)
    assert (await api.call("GET", RECORDS + "?q=%ED%A0%80"))[0] == 200  # read as U+FFFD


async def test_resolving_the_member_list_itself_is_422(api: Api, households_jsonl: list) -> None:
    household = households_jsonl[3]
    assert (await api.call("POST", RECORDS, json=household))[0] == 201
    path = f"{RECORDS}/{household['id']}/resolve"
    remove = {"anggota": {"remove": [{}]}}  # found by the fuzzer: a non-string member id
    status, answer = await api.call("PATCH", f"{RECORDS}/{household['id']}", json=remove)
    assert status == 422 and answer["fields"][0]["field"] == "anggota.remove[0]", answer
    for field in ("anggota", "anggota.nama", "anggota[nobody].nama"):
        status, answer = await api.call("POST", path, json={"field": field, "value": []})
        assert status == 422, (field, answer)
        assert answer["fields"][0]["field"] == "field"


async def test_a_drive_path_with_a_nul_is_422(tmp_path: Path) -> None:
    token = await make_token(tmp_path / "node")
    async with open_node(tmp_path / "node") as node:
        server = TestServer(build_app(node, UsbWatcher(node, [tmp_path], 60)), host="127.0.0.1")
        await server.start_server()
        async with aiohttp.ClientSession() as http:
            api = Api(http, str(server.make_url("")).rstrip("/"), token)
            status, answer = await api.call(
                "POST", "/api/v1/usb/use", json={"path": f"{tmp_path}/a\x00"}
            )
            assert status == 422 and answer["fields"][0]["field"] == "path", answer
        await server.close()
