"""`simpul backup` / `simpul restore` as processes on real data dirs: identical records under a
new identity, encrypted with a passphrase, and every bad input refused with one line and
nothing restored. (Restoring into a running network and syncing: test_operations_guide.py.)"""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
from conftest import generate, simpul_cli
from test_network_cli import PASSPHRASE as PASSPHRASE_ROOT
from test_network_cli import create_network, enrol_by_file, status

from simpul.crypto.sealed_stream import SEGMENT_BYTES

PASSPHRASE = "lima kata acak untuk cadangan\n"


def backup(data_dir: Path, out: Path) -> None:
    result = simpul_cli(data_dir, "backup", str(out), "--passphrase-stdin", stdin=PASSPHRASE)
    assert result.returncode == 0, result.stderr


def restore(
    data_dir: Path, source: Path, passphrase: str = PASSPHRASE
) -> subprocess.CompletedProcess:
    return simpul_cli(data_dir, "restore", str(source), "--passphrase-stdin", stdin=passphrase)


def export(data_dir: Path) -> list[dict]:
    result = simpul_cli(data_dir, "export", "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def feeds(data_dir: Path) -> dict[str, int]:
    with closing(sqlite3.connect(data_dir / "simpul.db")) as conn:
        return {origin.hex(): seq for origin, seq in conn.execute("SELECT origin, seq FROM feeds")}


@pytest.fixture(scope="module")
def office_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An admin's node in a network, with 300 imported households; made once, copied."""
    base = tmp_path_factory.mktemp("backup-office")
    data_dir = base / "office"
    create_network(data_dir)
    csv_file = base / "h.csv"
    csv_file.write_text(generate(300, "csv"))
    assert simpul_cli(data_dir, "import", str(csv_file)).returncode == 0
    return data_dir


@pytest.fixture
def office(office_template: Path, tmp_path: Path) -> Path:
    """This test's own copy of the office node (tmp_path/office)."""
    return shutil.copytree(office_template, tmp_path / "office")


def test_restore_gives_identical_records_under_a_new_identity(office: Path, tmp_path: Path) -> None:
    out = tmp_path / "usb" / "office.simpul-backup"
    out.parent.mkdir()
    backup(office, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.stat().st_size > SEGMENT_BYTES + 16  # several segments, not one
    raw = out.read_bytes()
    assert raw.startswith(b"SBK1")
    key_pem = (office / "node.key").read_bytes()
    assert b"PRIVATE KEY" not in raw and key_pem not in raw
    old = status(office)

    fresh = tmp_path / "new-device"
    done = restore(fresh, out)
    assert done.returncode == 0, done.stderr
    new = status(fresh)
    assert new["node_id"] != old["node_id"] and old["node_id"] in done.stdout
    assert new["node_id"] in done.stdout and "simpul network rejoin" in done.stdout
    assert export(fresh) == export(office)
    assert feeds(fresh) == feeds(office)  # the old node's feed, held as history
    assert new["feed_length"] == 0 and new["network_id"] is None  # to be enrolled
    assert simpul_cli(fresh, "verify").returncode == 0
    assert (fresh / "network" / "root.key").exists()  # the admin's, still encrypted
    assert not (fresh / "network" / "node.cert.pem").exists()  # the old identity's
    assert (fresh / "node.key").read_bytes() != key_pem
    for name in ("node.key", "network/root.key", "network/data-keys.json"):
        assert stat.S_IMODE((fresh / name).stat().st_mode) == 0o600, name
    with closing(sqlite3.connect(fresh / "simpul.db")) as conn:  # it can forward that feed
        certificate = conn.execute(
            "SELECT certificate FROM origin_certificates WHERE origin = ?",
            (bytes.fromhex(old["node_id"]),),
        ).fetchone()
    assert certificate and certificate[0] == (office / "network" / "node.cert.pem").read_bytes()


def test_a_restored_admin_device_certifies_itself_and_admits_again(
    office: Path, tmp_path: Path
) -> None:
    out = tmp_path / "office.simpul-backup"
    backup(office, out)
    fresh = tmp_path / "new-office"
    assert restore(fresh, out).returncode == 0
    rejoined = simpul_cli(fresh, "network", "rejoin", "--passphrase-stdin", stdin=PASSPHRASE_ROOT)
    assert rejoined.returncode == 0, rejoined.stderr
    facts = status(fresh)
    assert facts["network_id"] == status(office)["network_id"]
    assert facts["scope"] == ["1709"] and facts["node_id"] != status(office)["node_id"]
    joined = enrol_by_file(fresh, tmp_path / "desa", tmp_path)
    assert joined["network_id"] == facts["network_id"]
    again = simpul_cli(fresh, "network", "rejoin", "--passphrase-stdin", stdin=PASSPHRASE_ROOT)
    assert again.returncode == 1 and "already belongs" in again.stderr


def nothing_restored(data_dir: Path) -> bool:
    return not data_dir.exists() or not any(data_dir.iterdir())


def test_wrong_passphrase_damage_and_an_occupied_data_dir_are_refused(
    office: Path, tmp_path: Path
) -> None:
    out = tmp_path / "office.simpul-backup"
    backup(office, out)
    cases = {
        "wrong passphrase": (out.read_bytes(), "salah sekali\n", "wrong passphrase"),
        "truncated": (out.read_bytes()[: len(out.read_bytes()) // 2], PASSPHRASE, "damaged"),
        "cut at a segment": (out.read_bytes()[: 30 + SEGMENT_BYTES + 16], PASSPHRASE, "damaged"),
        "altered": (
            out.read_bytes()[:5000] + b"\x00" + out.read_bytes()[5001:],
            PASSPHRASE,
            "damaged",
        ),
        "not a backup": (b"PK\x03\x04 a zip file" * 10, PASSPHRASE, "not a Simpul backup"),
    }
    for case, (data, passphrase, message) in cases.items():
        source = tmp_path / f"{case}.bin"
        source.write_bytes(data)
        target = tmp_path / case.replace(" ", "-")
        result = restore(target, source, passphrase)
        assert result.returncode == 1, case
        assert message in result.stderr and result.stderr.count("\n") == 1, (case, result.stderr)
        assert nothing_restored(target), case
    before = export(office)
    occupied = restore(office, out)
    assert occupied.returncode == 1 and "already holds a node" in occupied.stderr
    assert export(office) == before
    missing = simpul_cli(tmp_path / "empty", "backup", str(tmp_path / "x"), "--passphrase-stdin",
                         stdin=PASSPHRASE)  # fmt: skip
    assert missing.returncode == 1 and "nothing to back up" in missing.stderr
