"""Hostile drives, written as the attacks of issue 19: a drive is untrusted input.

Each test hands an office node a drive a village wrote, booby-trapped: symbolic links to
the node's own database, to /dev/zero and to a system file, a network folder linked
elsewhere, FIFOs, a 3 GiB sparse file, a folder named as a temporary, deep nesting.
Each time the store stays intact (`simpul verify` clean, the village's records all
there and nothing else), every trap is one `refused` line in the report, nothing outside
the drive is touched, and the command ends (with bounded memory) or the running node
ends its sync and keeps serving."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Api, NodeProcess, make_token, simpul_cli, start_node_process
from test_lan_sync import eventually
from usb_nodes import import_households, usb_sync

GIB = 1024**3
MEMORY_LIMIT = 2 * GIB  # address space of a measured command: a read of everything fails
PEAK_RSS_LIMIT = 200 * 1024**2
COMMAND_SECONDS = 120  # a command that hangs (on a FIFO) fails the test instead


@dataclass
class Trap:
    """An office that never met the village, and a drive the village wrote for it."""

    office: Path
    village: Path
    drive: Path
    network: Path  # the drive's folder of the network
    records: int  # how many records the village holds (and the office should get)

    def status(self, data_dir: Path | None = None) -> dict[str, Any]:
        result = simpul_cli(data_dir or self.office, "status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def assert_store_intact(self, records: int | None = None) -> None:
        verified = simpul_cli(self.office, "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert self.status()["records"] == (self.records if records is None else records)


def drive_trap(office_village: tuple[Path, Path], drive: Path) -> Trap:
    """A drive at `drive` that the village wrote 30 households to, for the office to read."""
    office, village = office_village
    import_households(village, 30)
    drive.mkdir(parents=True)
    usb_sync(village, drive)
    facts = json.loads(simpul_cli(village, "status", "--json").stdout)
    assert facts["records"] > 0
    return Trap(office, village, drive, drive / "SIMPUL" / facts["network_id"], facts["records"])


@pytest.fixture
def trap(tmp_path: Path, office_village: tuple[Path, Path]) -> Trap:
    return drive_trap(office_village, tmp_path / "flashdisk")


def measured(data_dir: Path, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """`simpul ARGS` as a process limited to MEMORY_LIMIT of address space (and
    COMMAND_SECONDS); its result and its peak resident memory in bytes."""
    runner = textwrap.dedent(
        """
        import json, resource, subprocess, sys
        limit = int(sys.argv[1])
        def cap():
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        done = subprocess.run(sys.argv[2:], capture_output=True, text=True, preexec_fn=cap)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        print(json.dumps([done.returncode, done.stdout, done.stderr, peak]))
        """
    )
    command = [sys.executable, "-m", "simpul.node", "--data-dir", str(data_dir), *args]
    result = subprocess.run(
        [sys.executable, "-c", runner, str(MEMORY_LIMIT), *command],
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
    )
    assert result.returncode == 0, result.stderr
    code, out, err, peak = json.loads(result.stdout)
    return subprocess.CompletedProcess(command, code, out, err), peak


def synced(trap: Trap) -> dict[str, Any]:
    """`simpul usb sync --json` on the office: it must succeed, bounded in time and memory."""
    done, peak = measured(trap.office, "usb", "sync", str(trap.drive), "--json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert peak < PEAK_RSS_LIMIT, f"peak memory {peak / 1024**2:.0f} MiB"
    return json.loads(done.stdout)


def refused(report: dict[str, Any]) -> dict[str, str]:
    """Path on the drive -> reason, for every refused path of a sync report."""
    return {f["name"]: f["detail"] for f in report["files"] if f["status"] == "refused"}


def fingerprint(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (not following links) and its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def test_a_symlinked_manifest_temporary_does_not_overwrite_the_database(trap: Trap) -> None:
    link = trap.drive / "SIMPUL" / "manifest.json.tmp"
    link.symlink_to(trap.office / "simpul.db")

    report = synced(trap)
    assert "symbolic link" in refused(report)["SIMPUL/manifest.json.tmp"]
    assert report["imported"] > 0
    assert not link.is_symlink()  # the trap is gone from the drive
    trap.assert_store_intact()
    shown = simpul_cli(trap.office, "usb", "sync", str(trap.drive))
    assert shown.returncode == 0 and "selesai, aman dicabut" in shown.stdout


async def usb_state(api: Api) -> dict[str, Any]:
    status, facts = await api.call("GET", "/api/v1/status")
    assert status == 200, facts
    return facts["usb"] or {}


async def watched(
    trap: Trap, media: Path, node_processes: list[NodeProcess], monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], int]:
    """A running office node finds the drive under `media` and syncs it on its own: its
    USB status once it is no longer running, and its record count (it keeps serving)."""
    monkeypatch.setenv("SIMPUL_USB_ROOTS", str(media))
    monkeypatch.setenv("SIMPUL_USB_POLL", "0.2")
    token = await make_token(trap.office)
    node = await start_node_process(trap.office)
    node_processes.append(node)
    async with aiohttp.ClientSession() as session:
        api = Api(session, node.url, token)

        async def ended() -> bool:
            state = await usb_state(api)
            return state.get("drive") == str(trap.drive) and state["state"] != "berjalan"

        await eventually(ended, "the node ended its sync of the drive")
        state = await usb_state(api)
        async with session.get(node.url + "/healthz") as health:
            assert health.status == 200
        status, body = await api.call("GET", "/api/v1/status")
        assert status == 200
    node.kill()
    await node.process.wait()
    return state, body["records"]


async def test_a_running_node_does_not_follow_the_symlink_either(
    tmp_path: Path,
    office_village: tuple[Path, Path],
    node_processes: list[NodeProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    media = tmp_path / "media"
    trap = drive_trap(office_village, media / "FLASHDISK")
    (trap.drive / "SIMPUL" / "manifest.json.tmp").symlink_to(trap.office / "simpul.db")

    state, records = await watched(trap, media, node_processes, monkeypatch)
    assert state["state"] == "selesai", state
    assert "1 berkas bermasalah" in state["message"]
    (problem,) = state["files"]
    assert problem["name"] == "SIMPUL/manifest.json.tmp" and problem["status"] == "refused"
    assert records == trap.records
    trap.assert_store_intact()


def test_a_network_folder_linked_elsewhere_is_refused_and_nothing_outside_changes(
    tmp_path: Path, trap: Trap
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.tmp").write_text("do not delete")
    (elsewhere / "network.json").write_text("not the drive's")
    before = fingerprint(elsewhere)
    trap.network.rename(tmp_path / "moved-away")
    trap.network.symlink_to(elsewhere, target_is_directory=True)

    done, _ = measured(trap.office, "usb", "sync", str(trap.drive))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "symbolic link where a folder belongs" in done.stderr
    assert fingerprint(elsewhere) == before
    status = trap.status()["usb"]
    assert status["state"] == "gagal" and "symbolic link" in status["message"]
    inspected = simpul_cli(trap.office, "usb", "inspect", str(trap.drive), "--json")
    assert inspected.returncode == 0, inspected.stderr
    (only,) = json.loads(inspected.stdout)["networks"][trap.network.name]
    assert "symbolic link" in only["error"]
    trap.assert_store_intact(records=0)


def test_fifos_do_not_hang_inspect_or_sync(trap: Trap) -> None:
    name = "20260101-000000000-00000000-0000.simpul"
    os.mkfifo(trap.network / name)
    os.mkfifo(trap.network / "network.json.tmp")
    (trap.network / "network.json").unlink()
    os.mkfifo(trap.network / "network.json")
    (trap.drive / "SIMPUL" / "manifest.json").unlink()
    os.mkfifo(trap.drive / "SIMPUL" / "manifest.json")

    inspected, _ = measured(trap.office, "usb", "inspect", str(trap.drive), "--json")
    assert inspected.returncode == 0, inspected.stderr
    files = json.loads(inspected.stdout)["networks"][trap.network.name]
    assert "FIFO" in next(f for f in files if f["file"] == name)["error"]

    report = synced(trap)
    lines = refused(report)
    network = f"SIMPUL/{trap.network.name}"
    assert "FIFO" in lines[f"{network}/{name}"]
    assert "FIFO" in lines[f"{network}/network.json"]
    assert "FIFO" in lines[f"{network}/network.json.tmp"]
    assert "FIFO" in lines["SIMPUL/manifest.json"]
    assert report["imported"] > 0
    trap.assert_store_intact()


async def test_a_running_node_ends_its_sync_of_a_drive_with_a_fifo(
    tmp_path: Path,
    office_village: tuple[Path, Path],
    node_processes: list[NodeProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    media = tmp_path / "media"
    trap = drive_trap(office_village, media / "FLASHDISK")
    os.mkfifo(trap.network / "20260101-000000000-00000000-0000.simpul")

    state, records = await watched(trap, media, node_processes, monkeypatch)
    assert state["state"] == "selesai" and "1 berkas bermasalah" in state["message"], state
    assert records == trap.records
    trap.assert_store_intact()


def test_a_3_gib_sparse_file_is_judged_in_little_memory(trap: Trap) -> None:
    name = "20260101-000000000-00000000-0000.simpul"
    with (trap.network / name).open("wb") as sparse:
        sparse.truncate(3 * GIB)

    inspected, peak = measured(trap.office, "usb", "inspect", str(trap.drive), "--json")
    assert inspected.returncode == 0, inspected.stderr
    assert peak < PEAK_RSS_LIMIT, f"inspect peak memory {peak / 1024**2:.0f} MiB"
    files = json.loads(inspected.stdout)["networks"][trap.network.name]
    assert "bad magic" in next(f for f in files if f["file"] == name)["error"]

    report = synced(trap)  # asserts the peak memory of the sync
    (judged,) = [f for f in report["files"] if f["name"] == name]
    assert judged["status"] == "unreadable" and "bad magic" in judged["detail"]
    assert report["imported"] > 0
    trap.assert_store_intact()


def test_symlinks_to_dev_zero_and_a_system_file_are_not_read(trap: Trap) -> None:
    zero = "20260101-000000000-00000000-0000.simpul"
    (trap.network / zero).symlink_to("/dev/zero")
    (trap.network / "network.json").unlink()
    (trap.network / "network.json").symlink_to("/etc/passwd")
    (trap.drive / "SIMPUL" / "manifest.json").unlink()
    (trap.drive / "SIMPUL" / "manifest.json").symlink_to("/etc/hostname")
    passwd = Path("/etc/passwd").read_bytes()

    report = synced(trap)
    lines = refused(report)
    network = f"SIMPUL/{trap.network.name}"
    assert "symbolic link" in lines[f"{network}/{zero}"]
    assert "symbolic link" in lines[f"{network}/network.json"]
    assert "symbolic link" in lines["SIMPUL/manifest.json"]
    assert Path("/etc/passwd").read_bytes() == passwd
    assert (trap.network / "network.json").is_symlink()  # the drive is left as it was
    assert report["imported"] > 0
    trap.assert_store_intact()


def test_a_folder_named_as_a_temporary_does_not_fail_every_sync(trap: Trap) -> None:
    (trap.network / "x.tmp").mkdir()
    (trap.drive / "SIMPUL" / "y.tmp").mkdir()
    for _ in range(2):
        report = synced(trap)
        lines = refused(report)
        assert "folder" in lines[f"SIMPUL/{trap.network.name}/x.tmp"]
        assert "folder" in lines["SIMPUL/y.tmp"]
    assert (trap.network / "x.tmp").is_dir()
    trap.assert_store_intact()


def test_deeply_nested_json_is_a_clear_refusal(trap: Trap) -> None:
    deep = b"[" * 200_000
    (trap.drive / "SIMPUL" / "manifest.json").write_bytes(deep)
    (trap.network / "network.json").write_bytes(b'{"revocations": ' + deep)
    header = b"[" * 500_000  # a drive file whose header is nested instead of an object
    forged = b"SIMPULU\x01" + len(header).to_bytes(4, "big") + header + bytes(64)
    name = "20260101-000000000-00000000-0000.simpul"
    (trap.network / name).write_bytes(forged)

    inspected, _ = measured(trap.office, "usb", "inspect", str(trap.drive))
    assert inspected.returncode == 0, inspected.stderr
    assert "Traceback" not in inspected.stderr and "nested too deeply" in inspected.stdout

    report = synced(trap)
    lines = refused(report)
    assert "nested too deeply" in lines["SIMPUL/manifest.json"]
    assert "nested too deeply" in lines[f"SIMPUL/{trap.network.name}/network.json"]
    (judged,) = [f for f in report["files"] if f["name"] == name]
    assert judged["status"] == "unreadable" and "nested too deeply" in judged["detail"]
    trap.assert_store_intact()


async def test_a_device_where_a_drive_file_belongs_is_not_opened(trap: Trap) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    name = "20260101-000000000-00000000-0000.simpul"
    os.mknod(trap.network / name, 0o600 | 0o020000, os.makedev(1, 5))  # like /dev/zero
    report = await asyncio.to_thread(synced, trap)
    assert "device" in refused(report)[f"SIMPUL/{trap.network.name}/{name}"]
    trap.assert_store_intact()


def test_a_sync_killed_midway_does_not_stay_running(tmp_path: Path, trap: Trap) -> None:
    import_households(trap.village, 600, seed=21)
    usb_sync(trap.village, trap.drive)  # enough for the office to read for a while
    status_file = trap.office / "usb-status.json"
    sync = subprocess.Popen(
        [sys.executable, "-m", "simpul.node", "--data-dir", str(trap.office), "usb", "sync",
         str(trap.drive)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while sync.poll() is None:  # the status file is the node's record of a running sync
            text = status_file.read_text() if status_file.exists() else ""
            if '"progress": "membaca' in text:
                break
        assert sync.poll() is None, "the sync ended before it could be killed"
        sync.kill()
    finally:
        sync.wait()
    assert json.loads(status_file.read_text())["state"] == "berjalan"  # as the kill left it
    shown = trap.status()["usb"]
    assert shown["state"] == "gagal" and "terputus" in shown["message"], shown
    verified = simpul_cli(trap.office, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    again = simpul_cli(trap.office, "usb", "sync", str(trap.drive))
    assert again.returncode == 0 and "selesai, aman dicabut" in again.stdout
    trap.assert_store_intact(records=trap.status(trap.village)["records"])
