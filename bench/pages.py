#!/usr/bin/env python3
"""Operator page benchmark (issue 7): time to serve each page with 50,000 households.

    python bench/pages.py                         # 50,000 households, 30 requests a page
    python bench/pages.py --count 2000 --requests 10 --no-docs   # quick check

Imports the shared data set (cached CSV, as bench/import_search.py makes it) into a fresh
data dir, adds an admin, starts `simpul node` on loopback, logs in through the login form
like a browser (session cookie, CSRF token) and times GET requests of every page over one
keep-alive connection on loopback: the time is the server's, plus a loopback round trip.
Writes the section "Operator page (issue 7)" of docs/benchmarks.md. Target: ≤ 200 ms.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from import_search import (
    add_common_arguments,
    ensure_csv,
    import_once,
    machine,
    median,
    p95,
    run_checked,
    sample_queries,
    simpul_command,
    start_node,
    stop_node,
    write_docs,
)

SECTION = "## Operator page (issue 7)"
TARGET_MS = 200.0
PASSWORD = "bench-password-123"
CSRF = re.compile(rb'name="csrf" value="([^"]+)"')


class Browser:
    """One keep-alive connection that keeps the session cookie, like a browser tab."""

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return response.status, data

    def log_in(self, username: str) -> None:
        _, page = self.request("GET", "/masuk")
        token = CSRF.search(page)
        assert token, "no form token on the login page"
        form = urllib.parse.urlencode(
            {"csrf": token.group(1).decode(), "username": username, "password": PASSWORD}
        )
        status, _ = self.request("POST", "/masuk", form)
        if status != 303:
            sys.exit(f"login failed: {status}")


def pages(record_id: str, nik: str) -> dict[str, str]:
    return {
        "Beranda `/`": "/",
        "Data keluarga, first page `/keluarga`": "/keluarga",
        "search by NIK `/keluarga?q=NIK`": f"/keluarga?q={nik}",
        "search by name `/keluarga?q=SANTOSO`": "/keluarga?q=SANTOSO",
        "filter village + status, page 3": "/keluarga?desa=1709&status=draft&hal=3",
        "one household with history `/keluarga/ID`": f"/keluarga/{record_id}",
        "household form `/keluarga/ID/ubah`": f"/keluarga/{record_id}/ubah",
        "Usulan `/usulan?status=diusulkan`": "/usulan?status=diusulkan",
        "Konflik `/konflik`": "/konflik",
        "Admin `/admin`": "/admin",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per page")
    add_common_arguments(parser)
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    csv_path = ensure_csv(args.count, args.cache_dir)
    nik = sample_queries(csv_path)["nik"]
    work = Path(tempfile.mkdtemp(prefix="simpul-bench-pages-"))
    results: dict[str, list[float]] = {}
    load = 0.0
    try:
        store = work / "node"
        imported = import_once(csv_path, store)
        print(f"imported {imported.summary['households']} households", file=sys.stderr)
        command = [*simpul_command(), "--data-dir", str(store)]
        run_checked([*command, "operator", "add", "bench", "--role", "admin", "--password-stdin"],
                    stdin=PASSWORD + "\n")  # fmt: skip
        node, url = start_node(store, work / "node.log")
        try:
            tab = Browser(url)
            tab.log_in("bench")
            _, listing = tab.request("GET", f"/keluarga?q={nik}")
            found = re.search(rb'href="/keluarga/([0-9a-f-]{36})"', listing)
            assert found, "the NIK search found nothing"
            for label, path in pages(found.group(1).decode(), nik).items():
                timings = []
                for index in range(args.warmup + args.requests):
                    start = time.perf_counter()
                    status, _ = tab.request("GET", path)
                    elapsed = (time.perf_counter() - start) * 1000
                    if status != 200:
                        sys.exit(f"GET {path}: {status}")
                    if index >= args.warmup:
                        timings.append(elapsed)
                results[label] = timings
            load = os.getloadavg()[0]  # 1-minute average at the end of the timed requests
        finally:
            stop_node(node)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = machine()
    lines = [
        SECTION,
        "",
        f"`python bench/pages.py --count {args.count} --requests {args.requests}` on"
        f" {info['cpus']} CPUs ({info['model']}), {info['memory']}, Python {info['python']},"
        f" SQLite {info['sqlite']}, {info['date']}, load average {load:.1f} (a machine"
        " shared with other work). A logged-in session over one keep-alive loopback"
        " connection; target ≤ 200 ms a page.",
        "",
        "| page | median ms | p95 ms | max ms | within target |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for label, timings in results.items():
        ok = p95(timings) <= TARGET_MS
        lines.append(
            f"| {label} | {median(timings):.1f} | {p95(timings):.1f} | {max(timings):.1f}"
            f" | {'yes' if ok else '**NO**'} |"
        )
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_docs:
        write_docs(section, info, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
