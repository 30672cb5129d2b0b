"""House photos on one node: re-encoding, the content-addressed store, references in the
household document, the JSON API, and bad input (too large, not an image, cut short, a
full disk) refused with nothing half-stored and the record untouched."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from conftest import Api, NodeProcess, generate, make_token, simpul_cli, start_node_process
from photo_files import large_phone_photo, phone_photo
from PIL import Image
from test_backup import backup, restore
from usb_nodes import small_drive

from simpul.node.runtime import open_node
from simpul.node.server import build_app
from simpul.sync.photo_image import FULL_EDGE, MAX_UPLOAD, THUMB_EDGE, PhotoRejected, reencode
from simpul.sync.photo_store import PhotoMismatch, PhotoStore
from simpul.sync.record_doc import RecordDoc


def household(index: int = 0) -> dict:
    return json.loads(generate(index + 1, "jsonl").splitlines()[index])


def files_under(data_dir: Path) -> set[str]:
    """Every file of the photo store (temporary ones too), but the index cache."""
    root = data_dir / "photos"
    found = {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()
    return found - {"index.json"}


def test_reencode_shrinks_strips_exif_and_keeps_the_time_taken() -> None:
    original = large_phone_photo(1)
    assert 2_000_000 <= len(original) <= 4_500_000
    encoded = reencode(original)
    full = Image.open(io.BytesIO(encoded.full))
    thumb = Image.open(io.BytesIO(encoded.thumb))
    assert max(full.size) == FULL_EDGE and (encoded.width, encoded.height) == full.size
    assert max(thumb.size) == THUMB_EDGE
    assert 100_000 < len(encoded.full) <= 320 * 1024
    assert len(encoded.thumb) < 40 * 1024
    assert encoded.taken == "2026-11-02T09:15:42"
    for data in (encoded.full, encoded.thumb):
        assert not Image.open(io.BytesIO(data)).getexif()
        assert b"RumahCam" not in data and b"Exif" not in data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"%PDF-1.4 not a photo at all", "not_image"),
        (phone_photo(3)[:40_000], "truncated"),
        (b"\0" * (MAX_UPLOAD + 1), "too_large"),
    ],
    ids=["pdf", "cut-short", "too-large"],
)
def test_bad_images_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(PhotoRejected) as refused:
        reencode(data)
    assert refused.value.reason == reason


def test_store_keeps_one_file_per_hash_and_refuses_a_wrong_hash(tmp_path: Path) -> None:
    store = PhotoStore(tmp_path)
    store.open()
    digest = store.put(b"jpeg bytes")
    assert digest == hashlib.sha256(b"jpeg bytes").hexdigest()
    assert store.put(b"jpeg bytes") == digest and list(store.held()) == [digest]
    with pytest.raises(PhotoMismatch):
        store.put(b"other bytes", expected=digest)
    assert list(store.held()) == [digest] and not list(store.tmp.iterdir())
    store.append_partial(digest, b"jpeg ")
    assert store.partial_size(digest) == 5
    store.append_partial(digest, b"WRONG")
    other = hashlib.sha256(b"jpeg WRONG").hexdigest()
    store.remove(digest)
    with pytest.raises(PhotoMismatch):
        store.finish_partial(digest)
    assert not store.has(digest) and not store.has(other) and store.partial_size(digest) == 0


def test_photos_added_on_two_nodes_at_once_merge_and_removal_is_a_change() -> None:
    base = RecordDoc.new(b"\x01" * 16)
    fields = {k: v for k, v in household().items() if k != "id"}
    fields["anggota"] = [{**m, "id": f"m{i}"} for i, m in enumerate(fields["anggota"])]
    base.set_state(fields, "ani", 1)
    left = RecordDoc.load(base.save(), b"\x02" * 16)
    right = RecordDoc.load(base.save(), b"\x03" * 16)
    refs = {}
    for doc, name in ((left, "a"), (right, "b")):
        digest = hashlib.sha256(name.encode()).hexdigest()
        refs[name] = {"hash": digest, "kecil": digest, "jenis": "depan", "oleh": name}
        doc.set_state({**doc.household(), "foto": {digest: refs[name]}}, name, 2)
    merged = RecordDoc.load(left.save() + b"".join(c.raw_bytes for c in right.changes()))
    photos = merged.household()["foto"]
    assert set(photos) == {refs["a"]["hash"], refs["b"]["hash"]}
    # an edit that does not name the photos keeps them
    fields = {k: v for k, v in merged.household().items() if k != "foto"}
    merged.set_state({**fields, "desil": 1 if fields["desil"] != 1 else 2}, "ani", 3)
    assert set(merged.household()["foto"]) == set(photos)
    without = {refs["b"]["hash"]: refs["b"]}
    merged.set_state({**merged.household(), "foto": without}, "ani", 4)
    assert merged.household()["foto"] == without
    assert any(f.startswith("foto_") for f in merged.history()[-1].fields)


@dataclass
class PhotoApi(Api):
    """The API of an in-process node, and its data dir (to look at the photo files)."""

    data_dir: Path = Path()


@pytest.fixture
async def photo_api(tmp_path: Path) -> AsyncIterator[PhotoApi]:
    data_dir = tmp_path / "node"
    token = await make_token(data_dir)
    async with open_node(data_dir) as node:
        server = TestServer(build_app(node), host="127.0.0.1")
        await server.start_server()
        async with aiohttp.ClientSession() as session:
            yield PhotoApi(session, str(server.make_url("")).rstrip("/"), token, data_dir)
        await server.close()


async def created(api: Api, index: int = 0) -> dict:
    status, record = await api.call("POST", "/api/v1/records", json=household(index))
    assert status == 201, record
    return record


async def test_api_upload_references_stores_serves_and_removes(photo_api: PhotoApi) -> None:
    record = await created(photo_api)
    path = f"/api/v1/records/{record['id']}/photos"
    status, ref = await photo_api.call("POST", path + "?jenis=depan", data=phone_photo(7))
    assert status == 201, ref
    assert ref["jenis"] == "depan" and ref["oleh"] == "admin"
    assert ref["diambil"] == "2026-11-02T09:15:42"
    status, body = await photo_api.call("GET", f"/api/v1/records/{record['id']}")
    assert body["foto"] == {ref["hash"]: ref}
    assert files_under(photo_api.data_dir) == {ref["hash"], ref["kecil"]}
    for part, digest in (("besar", ref["hash"]), ("kecil", ref["kecil"])):
        async with photo_api.session.get(
            f"{photo_api.base}{path}/{ref['hash']}?part={part}",
            headers={"Authorization": f"Bearer {photo_api.token}"},
        ) as response:
            assert response.status == 200 and response.content_type == "image/jpeg"
            assert hashlib.sha256(await response.read()).hexdigest() == digest
    # an ordinary edit keeps the photo; the history names the photo change
    status, body = await photo_api.call(
        "PATCH", f"/api/v1/records/{record['id']}", json={"alamat": "JL. BARU 1"}
    )
    assert status == 200 and ref["hash"] in body["foto"]
    status, history = await photo_api.call("GET", f"/api/v1/records/{record['id']}/history")
    assert any(f.startswith("foto_") for c in history["changes"] for f in c["fields"])
    status, body = await photo_api.call("DELETE", f"{path}/{ref['hash']}")
    assert status == 200 and "foto" not in body
    assert files_under(photo_api.data_dir) == set()


async def test_same_photo_on_two_households_is_stored_once(photo_api: PhotoApi) -> None:
    photo = phone_photo(8)
    refs = []
    for index in range(2):
        record = await created(photo_api, index)
        path = f"/api/v1/records/{record['id']}/photos?jenis=dalam"
        status, ref = await photo_api.call("POST", path, data=photo)
        assert status == 201
        refs.append((record["id"], ref))
    assert refs[0][1]["hash"] == refs[1][1]["hash"]
    assert len(files_under(photo_api.data_dir)) == 2
    record_id, ref = refs[0]
    await photo_api.call("DELETE", f"/api/v1/records/{record_id}/photos/{ref['hash']}")
    assert files_under(photo_api.data_dir) == {ref["hash"], ref["kecil"]}


@pytest.mark.parametrize(
    ("body", "query", "status", "reason"),
    [
        (b"not an image", "jenis=depan", 422, "not_image"),
        (phone_photo(9)[:50_000], "jenis=depan", 422, "truncated"),
        (phone_photo(9), "jenis=atap", 422, "kind"),
        (b"\xff" * (50 * 1024 * 1024), "jenis=depan", 413, "too_large"),
    ],
    ids=["not-image", "cut-short", "unknown-kind", "50MB"],
)
async def test_api_bad_uploads_store_nothing_and_leave_the_record(
    photo_api: PhotoApi, body: bytes, query: str, status: int, reason: str
) -> None:
    record = await created(photo_api)
    path = f"/api/v1/records/{record['id']}/photos?{query}"
    got, answer = await photo_api.call("POST", path, data=body)
    assert got == status and answer["reason"] == reason, answer
    _, after = await photo_api.call("GET", f"/api/v1/records/{record['id']}")
    assert after == record
    assert files_under(photo_api.data_dir) == set()


async def test_a_full_disk_mid_write_stores_nothing(tmp_path: Path) -> None:
    with small_drive(tmp_path / "small", "2m") as disk:
        data_dir = disk / "node"
        token = await make_token(data_dir)
        async with open_node(data_dir) as node:
            server = TestServer(build_app(node), host="127.0.0.1")
            await server.start_server()
            async with aiohttp.ClientSession() as session:
                api = Api(session, str(server.make_url("")).rstrip("/"), token)
                record = await created(api)
                filler = disk / "filler"
                with open(filler, "wb", buffering=0) as out:  # less room than one photo
                    try:
                        while True:
                            out.write(b"\0" * 65536)
                    except OSError:
                        pass
                filler.write_bytes(filler.read_bytes()[: -150 * 1024])
                path = f"/api/v1/records/{record['id']}/photos?jenis=depan"
                status, answer = await api.call("POST", path, data=phone_photo(11))
                assert status == 507, answer
                _, after = await api.call("GET", f"/api/v1/records/{record['id']}")
                assert after == record
                assert files_under(data_dir) == set()
                filler.unlink()
                status, ref = await api.call("POST", path, data=phone_photo(11))
                assert status == 201 and files_under(data_dir) == {ref["hash"], ref["kecil"]}
            await server.close()


async def test_status_counts_photos_and_what_is_missing(photo_api: PhotoApi) -> None:
    record = await created(photo_api)
    path = f"/api/v1/records/{record['id']}/photos?jenis=depan"
    _, ref = await photo_api.call("POST", path, data=phone_photo(12))
    (photo_api.data_dir / "photos" / ref["hash"][:2] / ref["hash"]).unlink()
    _, facts = await photo_api.call("GET", "/api/v1/status")
    assert facts["photos"]["referenced"] == 1
    assert facts["photos"]["full_missing"] == 1 and facts["photos"]["thumbs_missing"] == 0
    assert facts["photos"]["bytes_missing"] == ref["ukuran"]


async def node_with_photos(data_dir: Path, count: int) -> list[dict]:
    """A node (no network needed) with `count` households, one photo each."""
    refs = []
    async with open_node(data_dir) as node:
        for index in range(count):
            record = await node.records.create(
                {k: v for k, v in household(index).items() if k != "id"}, "ani"
            )
            refs.append(
                await node.photos.add(record["id"], phone_photo(20 + index), "depan", "ani")
            )
    return refs


async def test_backup_carries_photos_sealed_and_restore_brings_them_back(tmp_path: Path) -> None:
    office = tmp_path / "office"
    refs = await node_with_photos(office, 2)
    out = tmp_path / "office.simpul-backup"
    backup(office, out)
    raw = out.read_bytes()
    for ref in refs:  # sealed: no stretch of any photo in clear
        photo = (office / "photos" / ref["hash"][:2] / ref["hash"]).read_bytes()
        assert photo[1000:1064] not in raw
    fresh = tmp_path / "new-device"
    assert restore(fresh, out).returncode == 0
    assert files_under(fresh) == {d for r in refs for d in (r["hash"], r["kecil"])}
    checked = simpul_cli(fresh, "verify")
    assert checked.returncode == 0 and "photos: 4 of 4 files match" in checked.stdout


async def test_verify_sets_a_damaged_photo_aside_to_be_fetched_again(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    (ref,) = await node_with_photos(data_dir, 1)
    path = data_dir / "photos" / ref["hash"][:2] / ref["hash"]
    path.write_bytes(path.read_bytes()[:-10])  # cut short on disk
    checked = simpul_cli(data_dir, "verify")
    assert checked.returncode == 1
    last = checked.stderr.strip().splitlines()[-1]
    assert "Traceback" not in checked.stderr and "photos/damaged/" in last
    assert "photos: 1 of 2 files match" in checked.stdout
    assert not path.exists() and (data_dir / "photos" / "damaged" / ref["hash"]).exists()
    async with open_node(data_dir) as node:
        assert (await node.photos.status())["full_missing"] == 1


async def test_a_starting_node_removes_photo_files_nothing_references(
    tmp_path: Path, node_processes: list[NodeProcess]
) -> None:
    data_dir = tmp_path / "node"
    (ref,) = await node_with_photos(data_dir, 1)
    orphan = PhotoStore(data_dir).put(phone_photo(99))  # as if the change was never written
    node_processes.append(await start_node_process(data_dir))
    assert files_under(data_dir) == {ref["hash"], ref["kecil"]}
    assert orphan not in files_under(data_dir)


def test_the_command_line_loads_pillow_only_to_add_a_photo() -> None:
    probe = "import sys, simpul.node.cli, simpul.node.node_status; print('PIL' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "False", loaded.stderr
