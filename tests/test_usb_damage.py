"""Damaged and full drives: truncation at every KiB, a flipped byte in every region of a
drive file, and a drive that fills up mid-write. Each case is read by a fresh copy of the
same office node, which must import exactly a verified prefix of the village's feed and
nothing else, and report where and why it stopped."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import simpul_cli
from enrolled_dirs import copy_pair
from usb_nodes import (
    drive_files,
    import_households,
    small_drive,
    usb_sync,
)

from simpul.crypto.node_key import verify_signature
from simpul.crypto.sealed_segments import SealedLayout
from simpul.node.runtime import open_node
from simpul.node.usb_carrier import UsbReport, sync_drive
from simpul.node.usb_drive import DriveFull
from simpul.sync.drive_file import parse_drive_file

SINGLE_EDITS = 60  # one checkpoint each, so a cut file still holds whole chunks


@pytest.fixture(scope="module")
def written(
    tmp_path_factory: pytest.TempPathFactory, enrolled_pair: tuple[Path, Path]
) -> dict[str, Any]:
    """An office that has not met the village yet, and one drive file the village wrote
    holding one large import and many small edits (several segments, many chunks)."""
    base = tmp_path_factory.mktemp("usb-damage")
    office, village = copy_pair(enrolled_pair, base)
    import_households(village, 300)

    async def edit() -> None:
        async with open_node(village) as node:
            ids = [r["id"] async for r in node.records.iter_all()][:SINGLE_EDITS]
            for index, record_id in enumerate(ids):
                await node.records.update(
                    record_id, lambda cur, i=index: {**cur, "alamat": f"Jl. Baru No. {i}"}, "op"
                )

    asyncio.run(edit())
    drive = base / "asli"
    drive.mkdir()
    usb_sync(village, drive)
    (name,) = [n for n in drive_files(drive) if n.endswith(".simpul")]
    data = (drive / name).read_bytes()
    return {"base": base, "office": office, "village": village, "name": name, "data": data}


async def read_copy(written: dict[str, Any], data: bytes) -> tuple[UsbReport, dict[str, int]]:
    """A fresh copy of the office reads a drive holding `data` as the village's file."""
    case = written["base"] / f"case-{uuid.uuid4().hex[:8]}"
    office = case / "office"
    shutil.copytree(written["office"], office)
    drive = case / "drive"
    target = drive / written["name"]
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    async with open_node(office) as node:
        report = await sync_drive(node, drive)
        verified = await node.records.verify_feeds(verify_signature)  # raises if corrupted
        counts = await node.records.counts()
    assert counts["entries"] == sum(verified.values())
    shutil.rmtree(case)
    return report, counts


async def test_truncation_at_every_kib_yields_a_verified_prefix(written: dict[str, Any]) -> None:
    data: bytes = written["data"]
    full, full_counts = await read_copy(written, data)
    assert [f.status for f in full.files] == ["imported"]
    body = parse_drive_file(data).body_offset
    assert len(data) > body + 2 * 16 * 1024  # several segments
    previous = 0
    partial_imports = 0
    for cut in range(1024, len(data), 1024):
        report, counts = await read_copy(written, data[:cut])
        (file_report,) = report.files
        if cut < body:
            assert file_report.status == "unreadable" and "cut short" in file_report.detail
        else:
            assert file_report.status == "truncated", (cut, file_report)
            assert file_report.offset == cut and f"{cut} of {len(data)}" in file_report.detail
        assert previous <= counts["entries"] < full_counts["entries"]
        assert counts["records"] <= full_counts["records"]
        partial_imports += counts["entries"] > 0
        previous = counts["entries"]
    assert partial_imports > 0  # complete segments before the cut were imported


def regions(data: bytes) -> Iterator[tuple[str, int]]:
    """(region name, byte offset) for a byte in every region of a drive file."""
    parsed = parse_drive_file(data)
    yield "magic", 0
    yield "header length", 9
    yield "header", len(parsed.signed) - 20
    yield "signature", len(parsed.signed) + 10
    layout = SealedLayout(parsed.header.plain_bytes, parsed.header.segment_bytes)
    for index, offset, length in layout.segments():
        start = parsed.body_offset + offset
        yield f"segment {index} ciphertext start", start
        yield f"segment {index} ciphertext middle", start + length // 2
        yield f"segment {index} tag", start + length - 1


async def test_a_flipped_byte_in_each_region_is_reported_and_nothing_bad_imported(
    written: dict[str, Any],
) -> None:
    data: bytes = written["data"]
    parsed = parse_drive_file(data)
    sealed = SealedLayout(parsed.header.plain_bytes, parsed.header.segment_bytes)
    layout = {index: parsed.body_offset + offset for index, offset, _ in sealed.segments()}
    _, full_counts = await read_copy(written, data)
    seen = set()
    for region, offset in regions(data):
        damaged = bytearray(data)
        damaged[offset] ^= 0x40
        report, counts = await read_copy(written, bytes(damaged))
        (file_report,) = report.files
        seen.add(file_report.status)
        if region.startswith("segment"):
            index = int(region.split()[1])
            assert file_report.status == "corrupted", (region, file_report)
            assert file_report.offset == layout[index]
            assert f"segment {index} does not authenticate" in file_report.detail
            assert counts["entries"] < full_counts["entries"]
        else:
            assert file_report.status in ("unreadable", "bad-signature", "untrusted-writer"), (
                region,
                file_report,
            )
            assert counts["entries"] == 0
    assert {"corrupted", "unreadable", "bad-signature"} <= seen


async def test_a_drive_that_fills_up_keeps_its_previous_state(
    tmp_path: Path, office_village: tuple[Path, Path]
) -> None:
    office, village = office_village
    import_households(village, 100)
    with small_drive(tmp_path / "stick", "160k") as drive:
        first = usb_sync(village, drive, "--keep-free", "0")
        assert first["written_entries"] > 0
        before = drive_files(drive)
        import_households(village, 1600, seed=21)  # far more than the drive has room for

        refused = simpul_cli(village, "usb", "sync", str(drive))
        assert refused.returncode != 0 and "the drive is full" in refused.stderr
        assert "Traceback" not in refused.stderr and len(refused.stderr.splitlines()) == 1
        status = usb_sync_status(village)
        assert status["state"] == "gagal" and "the drive is full" in status["message"]

        async with open_node(village) as node:  # skip the room check: really run out of space
            with pytest.raises(DriveFull, match="filled up while writing"):
                await sync_drive(node, drive, keep_free=-1000)
        assert drive_files(drive) == before  # no partial file, no temporary, old files intact

        at_office = usb_sync(office, drive)
        assert at_office["imported"] == first["written_entries"]
        assert at_office["problems"] == 0
    assert simpul_cli(office, "verify").returncode == 0


def usb_sync_status(data_dir: Path) -> dict[str, Any]:
    result = simpul_cli(data_dir, "status", "--json")
    return json.loads(result.stdout)["usb"]


@pytest.mark.parametrize(
    "change",
    [
        {"created_ms": 10**20},
        {"origins": [["not hex", 1, 2]]},
        {"origins": [["00" * 16, 5, 2]]},
        {"nonce": "00"},
        {"plain_bytes": 1},
        {"epoch": "eins"},
    ],
)
async def test_a_header_with_impossible_values_is_unreadable(
    written: dict[str, Any], change: dict[str, Any]
) -> None:
    data: bytes = written["data"]
    parsed = parse_drive_file(data)
    header = {**json.loads(parsed.signed[12:]), **change}
    text = json.dumps(header).encode()
    forged = b"SIMPULU\x01" + len(text).to_bytes(4, "big") + text + data[len(parsed.signed) :]
    report, counts = await read_copy(written, forged)
    (file_report,) = report.files
    assert file_report.status == "unreadable" and "malformed file header" in file_report.detail
    assert counts["entries"] == 0
