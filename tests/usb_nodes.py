"""Test helpers for the USB carrier: the records an office and a village node of one network
hold (the nodes: `office_village` in enrolled_dirs.py), and `simpul usb sync` run as a
process."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import generate, simpul_cli

from simpul.node.runtime import open_node


def import_households(data_dir: Path, count: int, seed: int = 13) -> str:
    """Import `count` synthetic households (those inside scope 1709 are kept); the CSV."""
    text = generate(count, "csv", seed)
    path = data_dir.parent / f"households-{seed}-{count}.csv"
    path.write_text(text, encoding="utf-8")
    result = simpul_cli(data_dir, "import", str(path))
    assert result.returncode == 0, result.stderr
    return text


def personal_fields(csv_text: str) -> set[str]:
    """Every NIK, name and KK number in a CSV of the shared generator."""
    fields = set()
    for row in csv.DictReader(io.StringIO(csv_text)):
        fields |= {row["NIK"], row["NAMA"], row["NOMOR KK"]}
    return fields


def usb_sync(data_dir: Path, drive: Path, *options: str) -> dict[str, Any]:
    result = simpul_cli(data_dir, "usb", "sync", str(drive), "--json", *options)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def drive_files(drive: Path) -> dict[str, bytes]:
    """Every file on the drive (relative path -> bytes)."""
    return {str(p.relative_to(drive)): p.read_bytes() for p in drive.rglob("*") if p.is_file()}


async def approve(data_dir: Path, count: int, operator: str = "verifikator") -> list[str]:
    """A verifier approves (status `disahkan`) the first `count` records; their ids."""
    async with open_node(data_dir) as node:
        ids = [r["id"] async for r in node.records.iter_all()][:count]
        for record_id in ids:
            await node.records.update(
                record_id, lambda current: {**current, "status_usulan": "disahkan"}, operator
            )
    return ids


@contextlib.contextmanager
def small_drive(path: Path, size: str) -> Iterator[Path]:
    """A real, small file system (tmpfs) mounted at `path`; needs root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
