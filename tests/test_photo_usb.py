"""House photos through a courier's USB drive (a folder): after the records, sealed under
the network data key (no image bytes in clear, names that do not give the hash away),
checked against their hashes, and a damaged file written again by a node that holds it."""

from __future__ import annotations

from pathlib import Path

import pytest
from photo_files import large_phone_photo
from usb_nodes import drive_files, usb_sync

from simpul.node.runtime import open_node

PHOTOS_DEFAULT = 3
PHOTOS_SLOW = 200


async def village_with_photos(village: Path, count: int) -> list[dict]:
    """`count` households of the village's scope, each with one 2-4 MB photo."""
    refs = []
    async with open_node(village) as node:
        for index in range(count):
            record = await node.records.create(
                {
                    "kode_wilayah": "1709042001",
                    "no_kk": f"1709042001{index:06d}",
                    "dusun": "Krajan",
                    "rt": "1",
                    "rw": "1",
                    "alamat": f"Jl. Melati {index}",
                    "desil": 2,
                    "status_usulan": "draft",
                    "program": [],
                    "rumah": {},
                    "anggota": [],
                },
                "ani",
            )
            refs.append(
                await node.photos.add(record["id"], large_phone_photo(index), "depan", "ani")
            )
    return refs


def stored(data_dir: Path, digest: str) -> Path:
    return data_dir / "photos" / digest[:2] / digest


async def photo_status(data_dir: Path) -> dict:
    async with open_node(data_dir) as node:
        return await node.photos.status()


async def carried(office_village: tuple[Path, Path], tmp_path: Path, count: int) -> None:
    office, village = office_village
    refs = await village_with_photos(village, count)
    drive = tmp_path / "flashdisk"
    drive.mkdir()
    written = usb_sync(village, drive)
    assert written["photos_written"] == 2 * count and written["written_entries"] == 2 * count
    on_drive = drive_files(drive)
    photo_files = [name for name in on_drive if "/foto/" in name]
    assert len(photo_files) == 2 * count
    for ref in refs:
        for digest in (ref["hash"], ref["kecil"]):
            data = stored(village, digest).read_bytes()
            assert not any(digest[:16] in name for name in on_drive)
            for blob in on_drive.values():
                assert data[:64] not in blob and data[2000:2064] not in blob
    taken = usb_sync(office, drive)
    assert taken["imported"] == 2 * count and taken["photos_taken"] == 2 * count
    assert taken["photos_refused"] == 0 and taken["photos_written"] == 0
    for ref in refs:
        for digest in (ref["hash"], ref["kecil"]):
            assert stored(office, digest).read_bytes() == stored(village, digest).read_bytes()
    facts = await photo_status(office)
    assert (facts["referenced"], facts["full_missing"], facts["thumbs_missing"]) == (count, 0, 0)


async def test_photos_go_by_drive_sealed_after_the_records(
    office_village: tuple[Path, Path], tmp_path: Path
) -> None:
    await carried(office_village, tmp_path, PHOTOS_DEFAULT)


@pytest.mark.long
async def test_two_hundred_photos_go_by_drive(
    office_village: tuple[Path, Path], tmp_path: Path
) -> None:
    await carried(office_village, tmp_path, PHOTOS_SLOW)


async def test_a_damaged_photo_on_the_drive_is_refused_and_written_again(
    office_village: tuple[Path, Path], tmp_path: Path
) -> None:
    office, village = office_village
    (ref,) = await village_with_photos(village, 1)
    drive = tmp_path / "flashdisk"
    drive.mkdir()
    usb_sync(village, drive)
    shelf = next(drive.rglob("foto"))
    files = sorted(shelf.iterdir(), key=lambda p: p.stat().st_size)
    damaged = files[-1]  # the full photo (the thumbnail is smaller)
    blob = bytearray(damaged.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    damaged.write_bytes(bytes(blob))
    taken = usb_sync(office, drive)
    assert (taken["photos_taken"], taken["photos_refused"]) == (1, 1)
    assert not stored(office, ref["hash"]).exists() and not damaged.exists()
    assert (await photo_status(office))["full_missing"] == 1
    assert usb_sync(village, drive)["photos_written"] == 1
    assert usb_sync(office, drive)["photos_taken"] == 1
    assert stored(office, ref["hash"]).read_bytes() == stored(village, ref["hash"]).read_bytes()
