#!/usr/bin/env python3
"""Import and search benchmark (issue 2, "A working node").

    python bench/import_search.py                 # 50,000 households, 3 import runs
    python bench/import_search.py --count 5000 --runs 1 --no-docs   # quick check

1. Generates the shared synthetic data set once (`shared/data/households.py --count N
   --format csv`) into a cache dir.
2. Baseline, in this process: one plain `csv.reader` pass over the same file before each
   import run; import time is reported as a ratio of it, so numbers from different
   machines can be compared.
3. Each run imports the file into a fresh data dir with `simpul --data-dir D import FILE
   --json` as a child process; wall time from spawn to exit, peak RSS of that child alone
   (`os.wait4` rusage).
4. On the first run's store: starts `simpul node` on loopback, makes an admin operator and
   a token, and times list/search requests through the JSON API over one keep-alive
   connection; then the same queries in-process through `RecordStore.search` (node
   stopped), so the server's share of the latency is visible. `GET /healthz` is the HTTP
   floor.
5. Prints a Markdown report and writes it as the section "Import and search (issue 2)" of
   `docs/benchmarks.md` (creating the file with an intro if it is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import http.client
import json
import os
import platform
import re
import select
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
GENERATOR = SHARED / "data" / "households.py"
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Import and search (issue 2)"

TARGET_IMPORT_S = 30.0
TARGET_RSS_MB = 400.0
TARGET_QUERY_MS = 50.0
NODE_START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 1800.0


# ----- helpers -----------------------------------------------------------------------


def simpul_command() -> list[str]:
    """The installed `simpul` console script, preferring the one beside this interpreter
    (a pyenv shim would add its own start-up time to every measurement)."""
    beside = Path(sys.executable).parent / "simpul"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("simpul")
    if not found:
        sys.exit("the `simpul` command is not on PATH (pip install -e . first)")
    return [found]


def median(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def run_checked(args: list[str], stdin: str | None = None) -> str:
    done = subprocess.run(
        args, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    if done.returncode != 0:
        sys.exit(f"command failed ({done.returncode}): {' '.join(args)}\n{done.stderr}")
    return done.stdout


def ensure_csv(count: int, cache_dir: Path) -> Path:
    """The data set for `count` households, generated once (deterministic: default seed)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"households-{count}.csv"
    if path.exists():
        return path
    if not GENERATOR.exists():
        sys.exit(f"generator not found: {GENERATOR}")
    print(f"generating {count} households into {path} ...", file=sys.stderr)
    partial = path.with_suffix(".csv.partial")
    with partial.open("wb") as out:
        subprocess.run(
            [sys.executable, str(GENERATOR), "--count", str(count), "--format", "csv"],
            stdout=out,
            check=True,
            timeout=COMMAND_TIMEOUT_S,
        )
    partial.rename(path)
    return path


def csv_pass(path: Path) -> tuple[float, int]:
    """Baseline: seconds for one plain csv.reader pass, and the number of data rows."""
    start = time.perf_counter()
    rows = 0
    with path.open(newline="", encoding="utf-8") as f:
        for _ in csv.reader(f):
            rows += 1
    return time.perf_counter() - start, rows - 1


def sample_queries(path: Path) -> dict[str, str]:
    """A NIK from the middle of the file and its 6-digit prefix."""
    _, rows = csv_pass(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)  # streamed: this process must stay small (see import_once)
        for number, row in enumerate(reader):
            if number == rows // 2:
                nik = row["NIK"]
                break
    return {"nik": nik, "nik6": nik[:6]}


# ----- import runs -------------------------------------------------------------------


@dataclass
class ImportRun:
    wall_s: float
    peak_rss_mb: float
    baseline_s: float
    db_mb: float
    summary: dict[str, Any]


def import_once(csv_path: Path, data_dir: Path, baseline: bool = True) -> ImportRun:
    """One import in a child process (of a CSV, or of a workbook with `baseline=False`:
    no csv.reader pass then, baseline_s is 0).

    Linux carries the forking process's high-water RSS into the child's `ru_maxrss` (the
    mm it had before exec), so this process must stay small: it only ever streams the CSV.
    Its own peak is reported next to the import's as the bound of that bias.
    """
    baseline_s = csv_pass(csv_path)[0] if baseline else 0.0
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            # the shared data set has a few NIKs and KKs twice (36 of 178,782 rows); measure
            # the import of all of it, as before duplicates were refused
            [
                *simpul_command(),
                "--data-dir",
                str(data_dir),
                "import",
                str(csv_path),
                "--json",
                "--allow-duplicates",
            ],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall_s = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"import failed ({proc.returncode}):\n{err.read()[-4000:]}")
        summary = json.loads(out.read())
    db_bytes = sum(p.stat().st_size for p in data_dir.glob("simpul.db*"))
    return ImportRun(
        wall_s=wall_s,
        peak_rss_mb=usage.ru_maxrss * 1024 / 1e6,  # Linux: KiB
        baseline_s=baseline_s,
        db_mb=db_bytes / 1e6,
        summary=summary,
    )


# ----- queries -----------------------------------------------------------------------


@dataclass
class Query:
    key: str
    label: str
    params: dict[str, str]
    target: bool  # named by the acceptance criterion (<= 50 ms median)


@dataclass
class Latency:
    http_ms: list[float] = field(default_factory=list)
    inproc_ms: list[float] = field(default_factory=list)
    total: int | None = None


def queries(samples: dict[str, str]) -> list[Query]:
    return [
        Query("list", "(a) list, first page: `?limit=50`", {"limit": "50"}, True),
        Query("nik", f"(b) exact NIK: `?q={samples['nik']}`", {"q": samples["nik"]}, True),
        Query("nik6", f"(c) NIK prefix: `?q={samples['nik6']}`", {"q": samples["nik6"]}, True),
        Query("name", "(d) name part: `?q=SANTOSO`", {"q": "SANTOSO"}, False),
        Query(
            "filter",
            "(e) filter: `?kode_wilayah=1709&status_usulan=draft`",
            {"kode_wilayah": "1709", "status_usulan": "draft"},
            False,
        ),
    ]


def start_node(data_dir: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    log = log_path.open("w")
    proc = subprocess.Popen(
        [*simpul_command(), "--data-dir", str(data_dir), "node", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    log.close()
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], NODE_START_TIMEOUT_S)
    line = proc.stdout.readline() if ready else ""
    match = re.search(r"https?://\S+", line)
    if not match:
        proc.kill()
        proc.wait()
        sys.exit(f"node did not start; first line {line!r}; log:\n{log_path.read_text()[-4000:]}")
    return proc, match.group(0).rstrip("/")


def stop_node(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not stopped within 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def peak_rss_of(pid: int) -> float:
    """VmHWM of a running process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    return 0.0


def http_latencies(
    url: str, token: str, todo: list[Query], requests: int, warmup: int
) -> tuple[dict[str, Latency], list[float]]:
    """Latency per query over one keep-alive connection, plus the /healthz floor."""
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Connection": "keep-alive"}

    def get(path: str) -> tuple[float, bytes]:
        start = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - start) * 1000
        if response.status != 200:
            sys.exit(f"GET {path}: {response.status} {body[:300]!r}")
        return elapsed, body

    results: dict[str, Latency] = {}
    floor: list[float] = []
    try:
        for _ in range(warmup):
            get("/healthz")
        for _ in range(requests):
            floor.append(get("/healthz")[0])
        for query in todo:
            path = "/api/v1/records?" + urllib.parse.urlencode(query.params)
            latency = results.setdefault(query.key, Latency())
            for _ in range(warmup):
                _, body = get(path)
            latency.total = json.loads(body)["total"]
            for _ in range(requests):
                latency.http_ms.append(get(path)[0])
    finally:
        conn.close()
    return results, floor


def inprocess_latencies(
    data_dir: Path, todo: list[Query], results: dict[str, Latency], requests: int, warmup: int
) -> None:
    """The same queries through RecordStore.search, without HTTP and JSON encoding."""
    from simpul.node.runtime import open_node

    async def go() -> None:
        async with open_node(data_dir) as node:
            for query in todo:
                kwargs: dict[str, Any] = dict(query.params)
                if "limit" in kwargs:
                    kwargs["limit"] = int(kwargs["limit"])
                latency = results.setdefault(query.key, Latency())
                for _ in range(warmup):
                    await node.records.search(**kwargs)
                for _ in range(requests):
                    start = time.perf_counter()
                    _, total = await node.records.search(**kwargs)
                    latency.inproc_ms.append((time.perf_counter() - start) * 1000)
                if latency.total is None:
                    latency.total = total

    asyncio.run(go())


# ----- report ------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    mem = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()),
        "model": model,
        "memory": mem,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "os": f"{platform.system()} {platform.release()}",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def verdict(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def fmt_list(values: list[float], digits: int) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def report(
    count: int,
    rows: int,
    csv_mb: float,
    runs: list[ImportRun],
    todo: list[Query],
    latencies: dict[str, Latency],
    floor: list[float],
    node_rss_mb: float,
    requests: int,
    info: dict[str, str],
) -> str:
    wall = [r.wall_s for r in runs]
    rss = [r.peak_rss_mb for r in runs]
    base = [r.baseline_s for r in runs]
    ratio = [r.wall_s / r.baseline_s for r in runs]
    summary = runs[0].summary
    lines = [
        SECTION,
        "",
        f"Command: `python bench/import_search.py --count {count} --runs {len(runs)}`"
        f" (`--help` for options). Measured {info['date']} on {info['cpus']} CPUs"
        f" ({info['model']}), {info['memory']} RAM, Python {info['python']},"
        f" SQLite {info['sqlite']}.",
        "",
        f"Data: `households.py --count {count} --format csv`: {rows:,} rows, {csv_mb:.1f} MB;"
        f" imported {summary['households']:,} households, {summary['persons']:,} persons,"
        f" {len(summary['rejected'])} rows rejected; store {runs[0].db_mb:.0f} MB on disk.",
        "",
        f"### Import (`simpul import FILE --json`, child process, {len(runs)} runs)",
        "",
        "| measure | median | all runs | target | holds |",
        "| --- | ---: | --- | --- | --- |",
        f"| wall time, spawn to exit (s) | {median(wall):.1f} | {fmt_list(wall, 1)} |"
        f" ≤ {TARGET_IMPORT_S:.0f} s | {verdict(median(wall) <= TARGET_IMPORT_S)} |",
        f"| peak RSS of the import process (MB) | {median(rss):.0f} | {fmt_list(rss, 0)} |"
        f" ≤ {TARGET_RSS_MB:.0f} MB | {verdict(max(rss) <= TARGET_RSS_MB)} |",
        f"| baseline: one `csv.reader` pass, same file, bench process (s) | {median(base):.2f}"
        f" | {fmt_list(base, 2)} | | |",
        f"| import ÷ baseline | {median(ratio):.0f}x | {fmt_list(ratio, 0)} | | |",
        f"| throughput (households/s) | {count / median(wall):,.0f} | | | |",
        "",
        f"### List and search at {count:,} households ({requests} requests each, after warm-up)",
        "",
        "HTTP: `GET /api/v1/records…` with a bearer token over one keep-alive connection"
        " (loopback), body read in full. In-process: `RecordStore.search` on the same store"
        " with the node stopped (no HTTP, no JSON encoding of the response).",
        "",
        "| query | matches | HTTP median (ms) | HTTP p95 (ms) | in-process median (ms)"
        " | in-process p95 (ms) | target (HTTP median) | holds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for query in todo:
        lat = latencies[query.key]
        http_median = median(lat.http_ms)
        target = f"≤ {TARGET_QUERY_MS:.0f} ms" if query.target else "-"
        holds = verdict(http_median <= TARGET_QUERY_MS) if query.target else "-"
        lines.append(
            f"| {query.label} | {lat.total:,} | {http_median:.1f} | {p95(lat.http_ms):.1f} |"
            f" {median(lat.inproc_ms):.1f} | {p95(lat.inproc_ms):.1f} | {target} | {holds} |"
        )
    lines += [
        f"| floor: `GET /healthz` | - | {median(floor):.2f} | {p95(floor):.2f} | - | - | - | - |",
        "",
        f"Peak RSS of the node process after all requests: {node_rss_mb:.0f} MB.",
        "The acceptance criterion names listing and searching by NIK ((a) to (c));"
        " (d) and (e) are reported for information.",
        "",
    ]
    return "\n".join(lines)


INTRO = """# Benchmarks

How fast Simpul is on the reference machine, and how to measure it again. Every benchmark
lives in `bench/` and is run from the repository root; each one rewrites its own section
below with the numbers it measured. Project rule: measure medians of several runs, and
report ratios against a baseline run in the same process.

| benchmark | command | section |
| --- | --- | --- |
| import and search | `python bench/import_search.py` | "Import and search (issue 2)" |
| feed verification | `python bench/verify_feeds.py` | "Feed verification (issue 3)" |

Reference machine (when this file was created): {cpus} CPUs ({model}), {memory} RAM,
{os}, Python {python}, SQLite {sqlite}; {date}.

"""


def write_docs(section: str, info: dict[str, str], heading: str = SECTION) -> None:
    """Replace the section that starts with `heading` (up to the next `## `) in
    docs/benchmarks.md with `section`, or append it; other sections stay as they are.
    Other benchmarks import this so every one of them rewrites only its own section."""
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else INTRO.format(**info)
    start = text.find(heading)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        following = text.find("\n## ", start + len(heading))
        rest = text[following + 1 :] if following != -1 else ""
        text = text[:start] + section + ("\n" + rest if rest else "")
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def publish(section: str, info: dict[str, str], heading: str, no_docs: bool) -> None:
    """Print a benchmark's report and, unless `no_docs`, write it as its docs section."""
    print(section)
    if not no_docs:
        write_docs(section, info, heading)
        print(f"updated {DOCS.relative_to(REPO)}", file=sys.stderr)


# ----- main --------------------------------------------------------------------------


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--count and --cache-dir, the same for every benchmark that imports households."""
    parser.add_argument("--count", type=int, default=50_000, help="households (default 50000)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "simpul-bench",
        help="where the generated CSV is kept (default ~/.cache/simpul-bench)",
    )


def run_benchmark(
    description: str,
    section: str,
    runs_help: str,
    bench: Callable[[argparse.Namespace, Path, Path], Any],
    report: Callable[[Any, argparse.Namespace, dict[str, str]], str],
    argv: list[str] | None = None,
) -> int:
    """The command line of a benchmark that imports households (`--runs`, `--count`,
    `--cache-dir`, `--no-docs`): `bench(args, csv, work dir)`, then its `report` section."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=3, help=f"{runs_help} (default 3)")
    add_common_arguments(parser)
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    if min(args.count, args.runs) < 1:
        parser.error("--count and --runs must be at least 1")
    csv_path = ensure_csv(args.count, args.cache_dir)
    work = Path(tempfile.mkdtemp(prefix="simpul-bench-"))
    try:
        results = bench(args, csv_path, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = machine()
    publish(report(results, args, info), info, section, args.no_docs)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="import runs (default 3)")
    parser.add_argument(
        "--requests", type=int, default=100, help="timed requests per query (default 100)"
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per query")
    add_common_arguments(parser)
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the first run's data dir")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.requests < 1 or args.count < 1:
        parser.error("--count, --runs and --requests must be at least 1")

    csv_path = ensure_csv(args.count, args.cache_dir)
    _, rows = csv_pass(csv_path)  # also warms the page cache for the baseline
    samples = sample_queries(csv_path)
    todo = queries(samples)
    work = Path(tempfile.mkdtemp(prefix="simpul-bench-"))
    runs: list[ImportRun] = []
    try:
        for index in range(args.runs):
            data_dir = work / f"run{index}"
            run = import_once(csv_path, data_dir)
            runs.append(run)
            print(
                f"import run {index + 1}/{args.runs}: {run.wall_s:.1f} s,"
                f" peak RSS {run.peak_rss_mb:.0f} MB, baseline {run.baseline_s:.2f} s",
                file=sys.stderr,
            )
            if run.summary["households"] != args.count:
                sys.exit(f"imported {run.summary['households']} households, not {args.count}")
            if index > 0:
                shutil.rmtree(data_dir)

        store = work / "run0"
        command = [*simpul_command(), "--data-dir", str(store)]
        run_checked([*command, "operator", "add", "bench", "--role", "admin", "--password-stdin"],
                    stdin="bench-password-123\n")  # fmt: skip
        token = run_checked([*command, "token", "create", "bench"]).strip().splitlines()[-1]
        node, url = start_node(store, work / "node.log")
        try:
            latencies, floor = http_latencies(url, token, todo, args.requests, args.warmup)
            node_rss_mb = peak_rss_of(node.pid)
        finally:
            stop_node(node)
        inprocess_latencies(store, todo, latencies, args.requests, args.warmup)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    info = machine()
    section = report(
        args.count,
        rows,
        csv_path.stat().st_size / 1e6,
        runs,
        todo,
        latencies,
        floor,
        node_rss_mb,
        args.requests,
        info,
    )
    print(section)
    if not args.no_docs:
        write_docs(section, info)
        print(f"updated {DOCS.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
