#!/usr/bin/env python3
"""USB carrier benchmark (issue 5): write every household to an empty drive, read it back.

    python bench/usb.py                       # 50,000 households, 3 runs of each
    python bench/usb.py --count 2000 --runs 1 --no-docs    # quick

Targets (from the issue): writing all 50,000 households to an empty drive folder <= 10 s;
importing them into an empty node <= 15 s; drive size <= 1.1 x the size of the entries
carried (the bundle frames of those entries, as LAN sync sends them).

How:

1. Setup with the CLI, like `bench/sync.py`: node A makes the network (scopes 1709 and
   1702), node B is enrolled by file, the shared data set is imported into A.
2. Write: `simpul --data-dir A usb sync DRIVE --json --keep-free 0` as a child process
   into a fresh empty folder each run; wall time from spawn to exit and the child's peak
   RSS (`os.wait4`).
3. Read: a fresh copy of the enrolled, empty B runs `simpul --data-dir B usb sync DRIVE
   --json` on the first run's drive; B must end with A's frontier.
4. Sizes: the drive file(s) against the bundle they seal (`plain_bytes` in their headers:
   the frames as LAN sync sends them), against the raw Automerge changes, and the whole
   `SIMPUL/` folder (with `network.json` and the manifest).
5. Baseline: every entry read from A's SQLite with plain `sqlite3` (`bench/sync.py`).
6. Prints a Markdown report and rewrites only the section "USB carrier (issue 5)" of
   `docs/benchmarks.md` (`--no-docs` to skip).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from import_search import (
    fmt_list,
    run_benchmark,
    simpul_command,
    verdict,
)

from simpul.sync.drive_file import parse_drive_file
from sync import frontier_of, read_entries, setup

SECTION = "## USB carrier (issue 5)"
WRITE_TARGET_S = 10.0
READ_TARGET_S = 15.0
SIZE_TARGET = 1.1


@dataclass
class Child:
    seconds: float
    peak_mb: float
    report: dict


def run_child(args: list[str]) -> Child:
    """Run one `simpul` command; wall time, peak RSS and its JSON output."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"command failed: {' '.join(args)}\n{err.read()[-4000:]}")
        return Child(seconds, usage.ru_maxrss * 1024 / 1e6, json.loads(out.read()))


@dataclass
class Results:
    households: int = 0
    import_s: float = 0.0
    entries: int = 0
    change_bytes: int = 0
    read_floor_s: float = 0.0
    writes: list[Child] = field(default_factory=list)
    reads: list[Child] = field(default_factory=list)
    files: int = 0
    file_bytes: int = 0
    bundle_bytes: int = 0
    folder_bytes: int = 0
    loads: list[float] = field(default_factory=list)


def bench(args: argparse.Namespace, csv_path: Path, work: Path) -> Results:
    res = Results()
    a_dir, b_template = work / "a", work / "b"
    summary, res.import_s = setup(a_dir, b_template, work, csv_path)
    res.households = summary["households"]
    res.read_floor_s, res.entries, res.change_bytes, _ = read_entries(a_dir / "simpul.db")
    cmd = simpul_command()
    drives = []
    for run in range(args.runs):
        drive = work / f"drive{run}"
        drive.mkdir()
        res.loads.append(os.getloadavg()[0])
        write = ["usb", "sync", str(drive), "--json", "--keep-free", "0"]
        child = run_child([*cmd, "--data-dir", str(a_dir), *write])
        assert child.report["written_entries"] == res.entries, child.report
        res.writes.append(child)
        drives.append(drive)
    for run in range(args.runs):
        b_dir = work / f"b{run}"
        shutil.copytree(b_template, b_dir)
        res.loads.append(os.getloadavg()[0])
        child = run_child([*cmd, "--data-dir", str(b_dir), "usb", "sync", str(drives[0]), "--json"])
        assert child.report["imported"] == res.entries and not child.report["problems"]
        assert frontier_of(b_dir) == frontier_of(a_dir)
        res.reads.append(child)
    files = sorted((drives[0] / "SIMPUL").rglob("*.simpul"))
    res.files = len(files)
    res.file_bytes = sum(p.stat().st_size for p in files)
    res.bundle_bytes = sum(parse_drive_file(p.read_bytes()).header.plain_bytes for p in files)
    res.folder_bytes = sum(p.stat().st_size for p in drives[0].rglob("*") if p.is_file())
    return res


def report(res: Results, args: argparse.Namespace, info: dict[str, str]) -> str:
    write_s = [c.seconds for c in res.writes]
    read_s = [c.seconds for c in res.reads]
    ratio = res.file_bytes / res.bundle_bytes
    rows = [
        f"| write all to an empty drive folder (`simpul usb sync`, node A) | time (s) "
        f"| {statistics.median(write_s):.2f} | {fmt_list(write_s, 2)} | ≤ {WRITE_TARGET_S:g} s "
        f"| {verdict(statistics.median(write_s) <= WRITE_TARGET_S)} |",
        f"| | peak RSS (MB) | {statistics.median([c.peak_mb for c in res.writes]):.0f} "
        f"| {fmt_list([c.peak_mb for c in res.writes], 0)} | | |",
        f"| import into an empty node (`simpul usb sync`, node B) | time (s) "
        f"| {statistics.median(read_s):.2f} | {fmt_list(read_s, 2)} | ≤ {READ_TARGET_S:g} s "
        f"| {verdict(statistics.median(read_s) <= READ_TARGET_S)} |",
        f"| | peak RSS (MB) | {statistics.median([c.peak_mb for c in res.reads]):.0f} "
        f"| {fmt_list([c.peak_mb for c in res.reads], 0)} | | |",
        f"| drive files / bundle frames they carry | ratio | {ratio:.4f} | | ≤ {SIZE_TARGET} "
        f"| {verdict(ratio <= SIZE_TARGET)} |",
    ]
    return "\n".join(
        [
            SECTION,
            "",
            f"Command: `python bench/usb.py --count {args.count} --runs {args.runs}`. Measured "
            f"{info['date']} on {info['cpus']} CPUs ({info['model']}), {info['memory']} RAM, "
            f"{info['os']}, Python {info['python']}. Load average (1 min) before each run: "
            f"{fmt_list(res.loads, 2)} (writes, then reads).",
            "",
            f"Setup: node A `simpul network create --scope 1709 --scope 1702`, node B enrolled "
            f"by file; {res.households:,} households imported into A ({res.import_s:.0f} s): "
            f"{res.entries:,} feed entries, {res.change_bytes / 1e6:.1f} MB of raw Automerge "
            "changes. Each write goes to a fresh empty folder; each read is a fresh copy of "
            "the empty, enrolled B reading the first write's drive, checked to end with A's "
            "frontier. Times are wall time of the child process, start-up included.",
            "",
            "| workload | measure | median | all runs | target | holds |",
            "| --- | --- | ---: | --- | --- | --- |",
            *rows,
            "",
            f"Sizes: {res.files} drive file(s), {res.file_bytes / 1e6:.2f} MB, sealing "
            f"{res.bundle_bytes / 1e6:.2f} MB of bundle frames (the same frames LAN sync sends); "
            f"the whole `SIMPUL/` folder with `network.json` and the manifest is "
            f"{res.folder_bytes / 1e6:.2f} MB; the raw changes are "
            f"{res.change_bytes / 1e6:.1f} MB. Baseline: reading every entry from A's SQLite "
            f"with plain `sqlite3` takes {res.read_floor_s:.2f} s.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(
        __doc__.splitlines()[0], SECTION, "runs of write and read", bench, report, argv
    )


if __name__ == "__main__":
    sys.exit(main())
