"""The USB carrier end to end: a village and an office that never meet on a network sync
through a drive (a folder) carried both ways, with `simpul usb sync` and `usb inspect`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from conftest import simpul_cli
from stored import heads
from test_network_cli import PASSPHRASE
from usb_nodes import (
    approve,
    drive_files,
    import_households,
    personal_fields,
    usb_sync,
)

from simpul.node.runtime import open_node
from simpul.node.usb_carrier import sync_drive


def record_status(data_dir: Path, record_id: str) -> str:
    with sqlite3.connect(f"file:{data_dir / 'simpul.db'}?mode=ro", uri=True) as db:
        (status,) = db.execute(
            "SELECT status_usulan FROM records WHERE id = ?", (record_id,)
        ).fetchone()
    return status


async def test_drive_goes_village_office_village_and_both_converge(
    tmp_path: Path, office_village: tuple[Path, Path]
) -> None:
    office, village = office_village
    csv_text = import_households(village, 80)
    drive = tmp_path / "flashdisk"
    drive.mkdir()

    written = usb_sync(village, drive)
    assert written["imported"] == 0 and written["written_entries"] > 0
    at_office = usb_sync(office, drive)
    assert at_office["imported"] == written["written_entries"]
    assert at_office["problems"] == 0 and at_office["written_entries"] == 0
    assert heads(office) == heads(village)

    approved = await approve(office, 5)
    back = usb_sync(office, drive)
    assert back["written_entries"] == 5
    home = usb_sync(village, drive)
    assert home["imported"] == 5 and home["problems"] == 0
    assert heads(village) == heads(office)
    assert {record_status(village, rid) for rid in approved} == {"disahkan"}
    for node in (office, village):
        assert simpul_cli(node, "verify").returncode == 0

    # importing the same drive again changes nothing, on the drive or in either store
    before = (drive_files(drive), heads(office))
    for node in (village, office):
        again = usb_sync(node, drive)
        assert (again["imported"], again["written_entries"], again["problems"]) == (0, 0, 0)
    after = drive_files(drive)
    manifest = "SIMPUL/manifest.json"
    assert {k: v for k, v in after.items() if k != manifest} == {
        k: v for k, v in before[0].items() if k != manifest
    }
    assert heads(office) == heads(village) == before[1]

    # the drive never holds a NIK, a name or a KK number in clear text
    everything = b"".join(drive_files(drive).values())
    carried = personal_fields(csv_text)
    assert len(carried) > 100
    leaked = [value for value in carried if value.encode() in everything]
    assert leaked == []


def test_two_drives_with_overlapping_data_both_import_cleanly(
    tmp_path: Path, office_village: tuple[Path, Path]
) -> None:
    office, village = office_village
    first, second = tmp_path / "stick-a", tmp_path / "stick-b"
    first.mkdir()
    second.mkdir()
    import_households(village, 40)
    usb_sync(village, first)
    import_households(village, 40, seed=14)
    usb_sync(village, second)  # an empty drive: it gets everything, overlapping the first

    from_second = usb_sync(office, second)
    from_first = usb_sync(office, first)
    assert from_second["problems"] == from_first["problems"] == 0
    assert from_first["imported"] == 0  # all held already
    assert [f["status"] for f in from_first["files"]] == ["held"]
    assert heads(office) == heads(village)
    # the office wrote nothing to the first drive that the village's second file held,
    # but it did bring that drive up to date with the village's later entries
    assert from_first["written_entries"] > 0
    assert simpul_cli(office, "verify").returncode == 0


def test_a_drive_file_written_by_a_revoked_node_is_refused(
    tmp_path: Path, office_village: tuple[Path, Path]
) -> None:
    office, lost = office_village  # the village laptop gets lost
    lost_id = json.loads(simpul_cli(lost, "status", "--json").stdout)["node_id"]
    import_households(lost, 30)
    revoked = simpul_cli(
        office, "network", "revoke", lost_id, "--reason", "laptop hilang", "--passphrase-stdin",
        stdin=PASSPHRASE,
    )  # fmt: skip
    assert revoked.returncode == 0, revoked.stderr
    drive = tmp_path / "flashdisk"
    drive.mkdir()
    usb_sync(lost, drive)  # the lost laptop has not heard of its revocation
    records_before = heads(office)

    report = usb_sync(office, drive)
    (refused,) = report["files"]
    assert refused["status"] == "revoked-writer" and lost_id in refused["detail"]
    assert report["imported"] == 0 and heads(office) == records_before
    shown = simpul_cli(office, "usb", "sync", str(drive))
    assert "revoked-writer" in shown.stderr and shown.returncode == 0


def test_inspect_lists_a_drive_without_the_key(
    tmp_path: Path, office_village: tuple[Path, Path]
) -> None:
    _, village = office_village
    import_households(village, 20)
    drive = tmp_path / "flashdisk"
    drive.mkdir()
    written = usb_sync(village, drive)
    stranger = tmp_path / "stranger"  # a node of no network: it has no data key at all
    result = simpul_cli(stranger, "usb", "inspect", str(drive), "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    village_id = json.loads(simpul_cli(village, "status", "--json").stdout)["node_id"]
    network_id = json.loads(simpul_cli(village, "status", "--json").stdout)["network_id"]
    (only,) = facts["networks"][network_id]
    assert only["complete"] and only["signature_valid"]
    assert only["writer"] == village_id and only["entries"] == written["written_entries"]
    assert only["origins"] == [{"origin": village_id, "from": 1, "to": written["written_entries"]}]
    assert facts["manifest"][network_id]["frontier"] == {village_id: written["written_entries"]}
    text = simpul_cli(stranger, "usb", "inspect", str(drive))
    assert village_id in text.stdout and "complete" in text.stdout
    refused = simpul_cli(stranger, "usb", "sync", str(drive))
    assert refused.returncode != 0 and "no network" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_compact_rewrites_the_drive_as_one_file(
    tmp_path: Path, office_village: tuple[Path, Path]
) -> None:
    office, village = office_village
    drive = tmp_path / "flashdisk"
    drive.mkdir()
    for seed in (13, 14, 15):
        import_households(village, 15, seed=seed)
        usb_sync(village, drive)
    network = (
        drive / "SIMPUL" / json.loads(simpul_cli(village, "status", "--json").stdout)["network_id"]
    )
    old = sorted(p.name for p in network.glob("*.simpul"))
    assert len(old) == 3

    compacted = usb_sync(village, drive, "--compact")
    assert sorted(compacted["removed"]) == old and len(compacted["written"]) == 1
    assert [p.name for p in network.glob("*.simpul")] == compacted["written"]
    at_office = usb_sync(office, drive)
    assert at_office["imported"] == compacted["written_entries"] and at_office["problems"] == 0
    assert heads(office) == heads(village)


async def test_a_large_transfer_is_cut_into_files_that_each_verify(
    tmp_path: Path, office_village: tuple[Path, Path]
) -> None:
    office, village = office_village
    import_households(village, 30)
    await approve(village, 3)  # four transactions: the import and three edits
    drive = tmp_path / "flashdisk"
    drive.mkdir()
    async with open_node(village) as node:
        report = await sync_drive(node, drive, max_file_bytes=1)  # cut after every checkpoint
    assert len(report.written) == 4
    at_office = usb_sync(office, drive)
    assert [f["status"] for f in at_office["files"]] == ["imported"] * 4
    assert at_office["imported"] == report.written_entries
    assert heads(office) == heads(village)
