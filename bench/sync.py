#!/usr/bin/env python3
"""LAN sync benchmark (issue 4, "LAN sync"): two nodes over loopback mutual TLS.

    python bench/sync.py                      # 50,000 households, W1 x3, W2 x5, W3 x7
    python bench/sync.py --count 2000 --w1-runs 1 --w2-runs 2 --w3-runs 3 --no-docs  # quick

Workloads and targets (from the issue):

- W1: initial sync of every household from node A to an empty node B: <= 10 s, <= 10 MB
  on the wire, peak RSS of each node <= 250 MB.
- W2: 1% of the households edited on each side (`desil` on A, `alamat` on B, the same
  households: concurrent edits of different fields), then one session (pull + push): <= 1 s.
- W3: a no-op session between two converged nodes: <= 50 ms and <= 4 KB on the wire
  (issue 4); <= 2,000 B when it resumes the TLS session of the last one (issue 17), and
  the first connection's cost (a fresh TLS context, nothing to resume) beside it.

How:

1. Setup with the CLI: `simpul network create --name B --scope 1709 --scope 1702` on A,
   node B enrolled by file with the same scopes, the shared data set (the CSV cached by,
   and generated like, `bench/import_search.py`) imported into A with `simpul import`.
2. Node A is a `simpul node` process (`SIMPUL_DISCOVERY=off`, `--listen 127.0.0.1:0
   --sync-port 0 --sync-period 3600`): the server side of every session.
3. Node B is a child process of this script (`bench/sync.py --client DIR`) that opens B's
   store like a node does (`open_node`, `SyncEngine`, TLS `client_context` as in
   `node/lan_sync.py`) and runs `sync_with(engine, url, context, trust)` when told to, so
   each session starts at once and is timed exactly (`perf_counter` around `sync_with`).
   Its peak RSS is its own `VmHWM`; A's is A's `VmHWM` from /proc.
4. Bytes on the wire: B connects to a byte-counting TCP proxy in this process (asyncio,
   127.0.0.1 only) that forwards to A's sync port; it counts TCP payload in both
   directions (TLS records included, TCP/IP headers not). W3 also runs direct sessions
   (no proxy) for its timing, since the proxy adds a hop on a millisecond scale.
5. W1 runs with a fresh copy of the enrolled, empty B and a freshly started A each time.
   W2 and W3 run on the last W1's pair. Load average before each run is recorded.
6. Baselines in this process: W1, reading every entry from A's SQLite with plain
   `sqlite3`, and the same change bytes compressed with zstd level 3 in 1,000-entry
   frames; W3, a plain mutual-TLS 1.3 round trip on loopback with the nodes' own
   certificates (handshake, 100 bytes each way, close), direct and through the proxy.
7. If a time target is missed (or with `--profile`), one more W1 (or W2) session runs with
   cProfile in B and with A under `python -m cProfile`; the top functions go in the report.
8. Prints a Markdown report and writes it as the section "LAN sync (issue 4)" of
   `docs/benchmarks.md` with `import_search.write_docs`, which leaves the other sections
   alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import random
import re
import shutil
import signal
import sqlite3
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from import_search import (
    DOCS,
    REPO,
    add_common_arguments,
    ensure_csv,
    fmt_list,
    machine,
    peak_rss_of,
    run_checked,
    simpul_command,
    verdict,
    write_docs,
)

SECTION = "## LAN sync (issue 4)"
PASSPHRASE = "bench passphrase, long enough\n"
SCOPES = ("1709", "1702")
TARGET_W1_S = 10.0
TARGET_W1_MB = 10.0
TARGET_RSS_MB = 250.0
TARGET_W2_S = 1.0
TARGET_W3_MS = 50.0
TARGET_W3_KB = 4.0
TARGET_W3_RESUMED_B = 2000
POUCHDB = {"w1_s": 21.8, "w1_mb": 14.7, "w1_rss": 460, "w2_s": 1.1, "w2_mb": 0.73, "w3_s": 0.25}
NODE_START_TIMEOUT_S = 60.0
SESSION_TIMEOUT_S = 900.0
PROXY_IDLE_S = 300.0
PROXY_MAX_CONNECTIONS = 64
PROXY_SETTLE_S = 5.0
TLS_PAYLOAD = 100
PROFILE_LINES = 16
W1_EXTRA_ATTEMPTS = 2  # W1 sessions that fail are reported and replaced, this many times
SPY_RATE = 250
SPY_ATTACH_S = 1.0
NODE_LINE = re.compile(r"(http://\S+?)/? \(LAN sync on port (\d+)\)")


# ----- B: the client node, a child process ------------------------------------------------


def vm_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


async def client_main(data_dir: Path) -> None:
    """Node B: JSON commands on stdin, one JSON answer per line on stdout."""
    import logging

    from simpul.node.lan_sync import LanSync
    from simpul.node.membership import load_membership
    from simpul.node.runtime import open_node
    from simpul.node.sync_session import SessionError, sync_with

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    loop = asyncio.get_running_loop()
    async with open_node(data_dir) as node:
        membership = load_membership(data_dir)
        assert membership is not None, "node B has not joined a network"
        # the node's own LAN carrier, built but not started: its engine, trust and TLS
        lan = LanSync(node, membership)
        engine, trust, context = lan.engine, lan.trust, lan.client_context
        print(json.dumps({"ready": True, "hwm_mb": vm_kb("VmHWM") * 1024 / 1e6}), flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            command = json.loads(line)
            op = command["op"]
            answer: dict[str, Any] = {}
            if op == "quit":
                return
            if op == "fresh":  # a new TLS context: the next session has nothing to resume
                context = LanSync(node, membership).client_context
            if op == "sync":
                profiler = cProfile.Profile() if command.get("profile") else None
                start = time.perf_counter()
                if profiler:
                    profiler.enable()
                try:
                    report = await sync_with(engine, command["url"], context, trust)
                except SessionError as exc:
                    failed = {"error": str(exc), "seconds": time.perf_counter() - start}
                    print(json.dumps(failed), flush=True)
                    continue
                finally:
                    if profiler:
                        profiler.disable()
                answer = {
                    "seconds": time.perf_counter() - start,
                    "received": report.received,
                    "sent": report.sent,
                    "bytes_in": report.bytes_in,
                    "bytes_out": report.bytes_out,
                    "refused": len(report.refused),
                    "hwm_mb": vm_kb("VmHWM") * 1024 / 1e6,
                    "rss_mb": vm_kb("VmRSS") * 1024 / 1e6,
                }
                if profiler:
                    answer["profile"] = profile_text(profiler)
            elif op == "edit":
                start = time.perf_counter()
                await edit_records(node.records, command["ids"], command["field"], command["tag"])
                answer = {"seconds": time.perf_counter() - start}
            elif op == "state":
                frontier = await engine.frontier()
                answer = {
                    "frontier": {o.hex(): s for o, s in frontier.items()},
                    "records": {rid: await node.records.get(rid) for rid in command["ids"]},
                }
            print(json.dumps(answer, default=str), flush=True)


async def edit_records(records: Any, ids: list[str], field_name: str, tag: str) -> None:
    """One `RecordStore.update` per household, as an operator would make them."""
    for number, rid in enumerate(ids):
        if field_name == "desil":

            def edit(h: dict[str, Any]) -> dict[str, Any]:
                return {**h, "desil": int(h.get("desil") or 0) % 10 + 1}
        else:
            value = f"Jl. Sinkron {tag} No. {number}"

            def edit(h: dict[str, Any], value: str = value) -> dict[str, Any]:
                return {**h, "alamat": value}

        await records.update(rid, edit, "bench")


def profile_text(profiler: cProfile.Profile | str) -> str:
    """Top functions by own time, then by cumulative time."""
    parts = []
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(PROFILE_LINES)
        parts.append(f"-- by {order} --\n" + trim_profile(out.getvalue()))
    return "\n".join(parts)


def trim_profile(text: str) -> str:
    """The table of a pstats printout, with paths shortened."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    kept = [line.rstrip() for line in lines[start:] if line.strip()]
    return "\n".join(re.sub(r"\S*/site-packages/", "", line) for line in kept)


class Client:
    """Drives node B (the child process)."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    @classmethod
    async def start(cls, data_dir: Path, log: Path) -> Client:
        with log.open("a") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).resolve()), "--client", str(data_dir),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, limit=64 * 1024 * 1024,
            )  # fmt: skip
        client = cls(process, log)
        await client._answer(NODE_START_TIMEOUT_S)
        return client

    async def _answer(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            await self.process.wait()
            sys.exit(f"node B (client) exited; log:\n{self.log.read_text()[-4000:]}")
        return json.loads(line)

    async def call(self, timeout: float = SESSION_TIMEOUT_S, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()
        return await self._answer(timeout)

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(OSError, ConnectionError):
                assert self.process.stdin is not None
                self.process.stdin.write(b'{"op": "quit"}\n')
                await self.process.stdin.drain()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


# ----- A: a `simpul node` process ------------------------------------------------------------


@dataclass
class NodeA:
    process: asyncio.subprocess.Process
    url: str
    sync_port: int

    @classmethod
    async def start(cls, data_dir: Path, log: Path) -> NodeA:
        command = simpul_command()
        with log.open("a") as err:
            process = await asyncio.create_subprocess_exec(
                *command, "--data-dir", str(data_dir), "node", "--listen", "127.0.0.1:0",
                "--sync-port", "0", "--sync-period", "3600",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "SIMPUL_DISCOVERY": "off"},
            )  # fmt: skip
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), NODE_START_TIMEOUT_S)
        except TimeoutError:
            line = b""
        found = NODE_LINE.search(line.decode())
        if not found:
            process.kill()
            await process.wait()
            sys.exit(f"node A did not start: {line!r}; log:\n{log.read_text()[-4000:]}")
        return cls(process, found.group(1), int(found.group(2)))

    def peak_rss_mb(self) -> float:
        return peak_rss_of(self.process.pid)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 60)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


# ----- the byte-counting proxy ---------------------------------------------------------------


class CountingProxy:
    """127.0.0.1:port -> 127.0.0.1:target; counts TCP payload bytes both ways."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = 0  # client -> server
        self.down = 0  # server -> client
        self.connections = 0
        self.active = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.up = self.down = self.connections = 0

    async def settled(self) -> None:
        """Wait (bounded) until every proxied connection has closed."""
        deadline = time.monotonic() + PROXY_SETTLE_S
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= PROXY_MAX_CONNECTIONS:
            writer.close()
            return
        self.active += 1
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.target_port), 10
            )
        except (OSError, TimeoutError):
            self.active -= 1
            writer.close()
            return
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, True), self._pump(up_reader, writer, False)
            )
        finally:
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await w.wait_closed()
            self.active -= 1

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upward: bool
    ) -> None:
        try:
            while True:
                data = await asyncio.wait_for(reader.read(256 * 1024), PROXY_IDLE_S)
                if not data:
                    break
                if upward:
                    self.up += len(data)
                else:
                    self.down += len(data)
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError, TimeoutError):
            pass
        finally:
            with contextlib.suppress(OSError, ConnectionError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()


# ----- baselines -----------------------------------------------------------------------------


def read_entries(db_path: Path) -> tuple[float, int, int, list[bytes]]:
    """Seconds to read every entry with plain sqlite3, entries, bytes of changes, changes."""
    start = time.perf_counter()
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT origin, seq, record_id, change FROM entries ORDER BY origin, seq"
        ).fetchall()
    finally:
        conn.close()
    seconds = time.perf_counter() - start
    changes = [row[3] for row in rows]
    return seconds, len(rows), sum(len(c) for c in changes), changes


def zstd_floor(changes: list[bytes]) -> int:
    """Bytes of the change stream compressed with zstd level 3 in 1,000-entry frames."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=3)
    total = 0
    for start in range(0, len(changes), 1000):
        total += len(compressor.compress(b"".join(changes[start : start + 1000])))
    return total


def tls_contexts(a_dir: Path, b_dir: Path, private: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A's server context and B's client context, as their nodes build them."""
    from simpul.crypto.node_key import NodeKey
    from simpul.crypto.tls import client_context, server_context
    from simpul.node.membership import load_membership

    contexts = []
    for data_dir, make in ((a_dir, server_context), (b_dir, client_context)):
        membership = load_membership(data_dir)
        assert membership is not None
        key = NodeKey.load(data_dir / "node.key")
        contexts.append(
            make(key, membership.certificate.pem, membership.root_cert, membership.revocations,
                 private_dir=private)
        )  # fmt: skip
    return contexts[0], contexts[1]


async def tls_round_trips(
    a_dir: Path, b_dir: Path, private: Path, runs: int
) -> tuple[list[float], int]:
    """Plain mutual-TLS round trips in this process: ms each (direct), bytes (via proxy)."""
    server_ctx, client_ctx = tls_contexts(a_dir, b_dir, private)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(
            OSError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError
        ):
            await reader.readexactly(TLS_PAYLOAD)
            writer.write(b"y" * TLS_PAYLOAD)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    proxy = await CountingProxy(port).start()

    async def once(target: int) -> float:
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", target, ssl=client_ctx)
        writer.write(b"x" * TLS_PAYLOAD)
        await writer.drain()
        await reader.readexactly(TLS_PAYLOAD)
        elapsed = time.perf_counter() - start
        writer.close()
        with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
            await writer.wait_closed()
        return elapsed * 1000

    try:
        await once(port)  # warm-up
        timings = [await once(port) for _ in range(runs)]
        proxy.reset()
        await once(proxy.port)
        await proxy.settled()
        wire = proxy.up + proxy.down
    finally:
        await proxy.stop()
        server.close()
        await server.wait_closed()
    return timings, wire


# ----- runs ------------------------------------------------------------------------------------


class SessionFailed(Exception):
    """B's session ended with a SessionError (B keeps what it committed)."""

    def __init__(self, seconds: float, error: str) -> None:
        super().__init__(error)
        self.seconds = seconds
        self.error = error


@dataclass
class Session:
    seconds: float
    wire_up: int
    wire_down: int
    received: int
    sent: int
    load: float
    b_rss_mb: float = 0.0
    a_rss_mb: float = 0.0
    connections: int = 0
    profile: str = ""

    @property
    def wire(self) -> int:
        return self.wire_up + self.wire_down


@dataclass
class Results:
    households: int = 0
    entries: int = 0
    import_s: float = 0.0
    change_bytes: int = 0
    zstd_bytes: int = 0
    read_s: list[float] = field(default_factory=list)
    w1: list[Session] = field(default_factory=list)
    w2: list[Session] = field(default_factory=list)
    w2_edits: int = 0
    w2_edit_s: list[tuple[float, float]] = field(default_factory=list)  # (A, B) seconds
    w3_direct: list[Session] = field(default_factory=list)
    w3_proxied: list[Session] = field(default_factory=list)
    w3_first: list[Session] = field(default_factory=list)  # fresh TLS context: full handshake
    tls_ms: list[float] = field(default_factory=list)
    tls_wire: int = 0
    load_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    failed: list[tuple[str, float, str]] = field(default_factory=list)  # (workload, s, why)
    profiles: dict[str, str] = field(default_factory=dict)


def load1() -> float:
    return os.getloadavg()[0]


def setup(a_dir: Path, b_dir: Path, work: Path, csv_path: Path) -> tuple[dict[str, Any], float]:
    """Network on A, B enrolled by file, households imported into A."""
    cmd = simpul_command()
    scopes = [arg for scope in SCOPES for arg in ("--scope", scope)]
    run_checked([*cmd, "--data-dir", str(a_dir), "network", "create", "--name", "B", *scopes,
                 "--passphrase-stdin"], stdin=PASSPHRASE)  # fmt: skip
    request, grant = work / "b.req", work / "b.grant"
    run_checked([*cmd, "--data-dir", str(b_dir), "enroll", "request", "--out", str(request),
                 "--name", "b"])  # fmt: skip
    run_checked([*cmd, "--data-dir", str(a_dir), "network", "admit", str(request), *scopes,
                 "--out", str(grant), "--passphrase-stdin"], stdin=PASSPHRASE)  # fmt: skip
    run_checked([*cmd, "--data-dir", str(b_dir), "enroll", "install", str(grant)])
    start = time.perf_counter()
    # all 50,000 as measured before (the shared set has a few NIKs and KKs twice)
    out = run_checked(
        [*cmd, "--data-dir", str(a_dir), "import", str(csv_path), "--json", "--allow-duplicates"]
    )
    return json.loads(out), time.perf_counter() - start


def frontier_of(data_dir: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{data_dir / 'simpul.db'}?mode=ro", uri=True)
    try:
        return {bytes(o).hex(): s for o, s in conn.execute("SELECT origin, seq FROM feeds")}
    finally:
        conn.close()


def record_ids(data_dir: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{data_dir / 'simpul.db'}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM records ORDER BY id")]
    finally:
        conn.close()


async def session(client: Client, proxy: CountingProxy | None, url: str, **extra: Any) -> Session:
    if proxy is not None:
        proxy.reset()
    load = load1()
    answer = await client.call(op="sync", url=url, **extra)
    if proxy is not None:
        await proxy.settled()
    if "error" in answer:
        raise SessionFailed(answer["seconds"], answer["error"])
    result = Session(
        seconds=answer["seconds"],
        wire_up=proxy.up if proxy else 0,
        wire_down=proxy.down if proxy else 0,
        received=answer["received"],
        sent=answer["sent"],
        load=load,
        b_rss_mb=answer["hwm_mb"],
        connections=proxy.connections if proxy else 0,
    )
    if answer["refused"]:
        sys.exit(f"node B refused {answer['refused']} entries; see {client.log}")
    result.profile = answer.get("profile", "")
    return result


async def check_converged(a_dir: Path, client: Client, ids: list[str], what: str) -> None:
    theirs = await client.call(op="state", ids=ids)
    ours = frontier_of(a_dir)
    if theirs["frontier"] != ours:
        sys.exit(f"{what}: frontiers differ: A {ours} B {theirs['frontier']}")
    if ids:
        from simpul.node.runtime import open_node

        async with open_node(a_dir) as node_a:
            for rid in ids:
                on_a = await node_a.records.get(rid)
                on_b = theirs["records"][rid]
                assert on_a is not None and on_b is not None
                pairs = [(on_a[k], on_b[k]) for k in ("desil", "alamat")]
                if any(x != y for x, y in pairs):
                    sys.exit(f"{what}: record {rid} differs: {pairs}")


async def w1_run(
    a_dir: Path, template: Path, b_dir: Path, work: Path, profiles: dict[str, str] | None = None
) -> tuple[Session, NodeA, Client, CountingProxy]:
    """A fresh B and a freshly started A; one session pulls everything."""
    shutil.rmtree(b_dir, ignore_errors=True)
    shutil.copytree(template, b_dir)
    node_a = await NodeA.start(a_dir, work / "a.log")
    proxy = await CountingProxy(node_a.sync_port).start()
    client = await Client.start(b_dir, work / "b.log")
    try:
        if profiles is None:
            result = await session(client, proxy, proxy.url)
        else:
            result = await profiled_session(client, proxy, node_a, work, "W1", profiles)
        result.a_rss_mb = node_a.peak_rss_mb()
    except BaseException:
        for part in (client, proxy, node_a):
            await part.stop()
        raise
    return result, node_a, client, proxy


async def py_spy(pid: int, out: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("a") as err:
        return await asyncio.create_subprocess_exec(
            "py-spy", "record", "--pid", str(pid), "--rate", str(SPY_RATE), "--format", "raw",
            "--nonblocking", "--output", str(out),
            stdin=asyncio.subprocess.DEVNULL, stdout=err, stderr=err,
        )  # fmt: skip


async def stop_spy(spy: asyncio.subprocess.Process) -> None:
    if spy.returncode is None:
        spy.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(spy.wait(), 60)
        except TimeoutError:
            spy.kill()
            await spy.wait()


def spy_summary(path: Path) -> str:
    """Top functions of py-spy's collapsed stacks: own samples, then inclusive samples."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    if not path.exists():
        return "(no samples)"
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [
            re.sub(r"\S*/(site-packages|lib/python3\.\d+)/", "", re.sub(r":\d+\)$", ")", f))
            for f in stack.split(";")
            if not f.startswith(("process ", "thread "))
        ]
        if not frames:
            continue
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    lines = [f"{total} samples at {SPY_RATE}/s while busy (idle threads not sampled)"]
    for title, table in (("own time", own), ("inclusive time, Simpul functions", inclusive)):
        lines.append(f"-- by {title} --")
        if table is inclusive:  # the project's own functions, not the loop and CLI frames
            table = {
                k: v
                for k, v in table.items()
                if re.search(r"\((sync|node|crypto)/", k) and "/cli" not in k
            }
        for name, count in sorted(table.items(), key=lambda kv: -kv[1])[:PROFILE_LINES]:
            lines.append(f"{100 * count / max(total, 1):5.1f}%  {count:6d}  {name}")
    return "\n".join(lines)


async def profiled_session(
    client: Client,
    proxy: CountingProxy,
    node_a: NodeA,
    work: Path,
    label: str,
    profiles: dict[str, str],
) -> Session:
    """One session with both nodes sampled by py-spy (every thread, SQLite's included), or
    with cProfile inside B's `sync_with` (its event-loop thread only) without py-spy."""
    if shutil.which("py-spy") is None:
        result = await session(client, proxy, proxy.url, profile=True)
        profiles[
            f"{label} ({result.seconds:.2f} s under the profiler), node B: cProfile of the"
            " event-loop thread only (install py-spy to see SQLite's thread and node A)"
        ] = result.profile
        return result
    spies = []
    for name, pid in (("a", node_a.process.pid), ("b", client.process.pid)):
        out = work / f"{label}-{name}.spy"
        spies.append((name, out, await py_spy(pid, out, work / "py-spy.log")))
    await asyncio.sleep(SPY_ATTACH_S)
    try:
        result = await session(client, proxy, proxy.url)
    finally:
        for _, _, spy in spies:
            await stop_spy(spy)
    roles = {"a": "node A, serving (pull) and ingesting (push)", "b": "node B, the client"}
    for name, out, _ in spies:
        profiles[
            f"{label} ({result.seconds:.2f} s while sampled), {roles[name]}: py-spy, all threads"
        ] = spy_summary(out)
    return result


async def bench(args: argparse.Namespace, csv_path: Path, work: Path) -> Results:
    res = Results(load_start=os.getloadavg())
    a_dir, template = work / "a", work / "b-empty"
    summary, res.import_s = setup(a_dir, template, work, csv_path)
    res.households = summary["households"]
    print(f"imported {res.households} households into A in {res.import_s:.1f} s", file=sys.stderr)
    changes: list[bytes] = []
    for _ in range(3):
        seconds, res.entries, res.change_bytes, changes = read_entries(a_dir / "simpul.db")
        res.read_s.append(seconds)
    res.zstd_bytes = zstd_floor(changes)
    del changes

    node_a: NodeA | None = None
    client: Client | None = None
    proxy: CountingProxy | None = None

    async def stop_all() -> None:
        for part in (client, proxy, node_a):
            if part is not None:
                await part.stop()

    try:
        b_dir = work / "b"
        for index in range(args.w1_runs + W1_EXTRA_ATTEMPTS):
            if len(res.w1) == args.w1_runs:
                break
            await stop_all()
            try:
                result, node_a, client, proxy = await w1_run(a_dir, template, b_dir, work)
            except SessionFailed as exc:
                res.failed.append(("W1", exc.seconds, exc.error))
                print(
                    f"W1 attempt {index + 1} failed after {exc.seconds:.1f} s: {exc}",
                    file=sys.stderr,
                )
                continue
            if result.received != res.entries:
                sys.exit(f"W1: B received {result.received} entries, A holds {res.entries}")
            await check_converged(a_dir, client, [], "W1")
            res.w1.append(result)
            print(
                f"W1 run {index + 1}: {result.seconds:.2f} s, {result.wire / 1e6:.2f} MB,"
                f" B {result.b_rss_mb:.0f} MB, A {result.a_rss_mb:.0f} MB, load {result.load:.2f}",
                file=sys.stderr,
            )
        if args.profile or statistics.median(s.seconds for s in res.w1) > TARGET_W1_S:
            # one more W1 (B's identity has no feed on A yet, so a fresh copy is still
            # a new node), profiled on both sides; W2 and W3 go on with this pair
            await stop_all()
            client = proxy = node_a = None
            result, node_a, client, proxy = await w1_run(a_dir, template, b_dir, work, res.profiles)
        if not res.w1:
            sys.exit(f"every W1 session failed: {res.failed}")
        assert node_a is not None and client is not None and proxy is not None

        from simpul.node.runtime import open_node

        ids = record_ids(a_dir)
        edits = max(1, len(ids) // 100)
        res.w2_edits = edits
        for index in range(args.w2_runs):
            chosen = random.Random(index).sample(ids, edits)
            start = time.perf_counter()
            async with open_node(a_dir) as opened:
                await edit_records(opened.records, chosen, "desil", str(index))
            a_edit_s = time.perf_counter() - start
            b_edit = await client.call(op="edit", ids=chosen, field="alamat", tag=str(index))
            res.w2_edit_s.append((a_edit_s, b_edit["seconds"]))
            result = await session(client, proxy, proxy.url)
            if (result.received, result.sent) != (edits, edits):
                sys.exit(f"W2: received {result.received}, sent {result.sent}, edits {edits}")
            await check_converged(a_dir, client, chosen[:20], "W2")
            res.w2.append(result)
            print(
                f"W2 run {index + 1}: {result.seconds:.3f} s, {result.wire / 1e3:.0f} KB,"
                f" load {result.load:.2f}",
                file=sys.stderr,
            )

        direct = f"https://127.0.0.1:{node_a.sync_port}"
        await session(client, None, direct)  # warm-up
        for index in range(args.w3_runs):
            for url, into, via in (
                (direct, res.w3_direct, None),
                (proxy.url, res.w3_proxied, proxy),
            ):
                result = await session(client, via, url)
                if result.received or result.sent:
                    sys.exit(f"W3: a no-op session moved {result.received}/{result.sent} entries")
                into.append(result)
            print(
                f"W3 run {index + 1}: {res.w3_direct[-1].seconds * 1000:.1f} ms direct,"
                f" {res.w3_proxied[-1].seconds * 1000:.1f} ms and"
                f" {res.w3_proxied[-1].wire} B via proxy",
                file=sys.stderr,
            )
        await client.call(op="fresh")
        res.w3_first.append(await session(client, proxy, proxy.url))
        print(f"W3 on a fresh TLS context: {res.w3_first[-1].wire} B", file=sys.stderr)
        res.tls_ms, res.tls_wire = await tls_round_trips(
            a_dir, work / "b", work, max(args.w3_runs, 5)
        )

        w2_slow = statistics.median(s.seconds for s in res.w2) > TARGET_W2_S
        if args.profile or w2_slow:
            # one more W2 round on the same pair, sampled
            chosen = random.Random(1000).sample(ids, edits)
            async with open_node(a_dir) as opened:
                await edit_records(opened.records, chosen, "desil", "p")
            await client.call(op="edit", ids=chosen, field="alamat", tag="p")
            await profiled_session(client, proxy, node_a, work, "W2", res.profiles)
    finally:
        await stop_all()
    return res


# ----- report ----------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values)


def report(res: Results, args: argparse.Namespace, info: dict[str, str]) -> str:
    w1_s = [s.seconds for s in res.w1]
    w1_mb = [s.wire / 1e6 for s in res.w1]
    b_rss = [s.b_rss_mb for s in res.w1]
    a_rss = [s.a_rss_mb for s in res.w1]
    w2_s = [s.seconds for s in res.w2]
    w2_kb = [s.wire / 1e3 for s in res.w2]
    w3_ms = [s.seconds * 1000 for s in res.w3_direct]
    w3p_ms = [s.seconds * 1000 for s in res.w3_proxied]
    w3_b = [float(s.wire) for s in res.w3_proxied]
    read_s = med(res.read_s)
    tls_ms = med(res.tls_ms)
    per_entry = med([float(s.wire) for s in res.w1]) / max(res.entries, 1)
    lines = [
        SECTION,
        "",
        f"Command: `python bench/sync.py --count {args.count} --w1-runs {args.w1_runs}"
        f" --w2-runs {args.w2_runs} --w3-runs {args.w3_runs}` (`--help` for options)."
        f" Measured {info['date']} on {info['cpus']} CPUs ({info['model']}), {info['memory']}"
        f" RAM, {info['os']}, Python {info['python']}, SQLite {info['sqlite']}. Load average"
        f" before the benchmark: {res.load_start[0]:.2f}, {res.load_start[1]:.2f},"
        f" {res.load_start[2]:.2f} (1, 5, 15 min); before each run in the tables.",
        "",
        f"Setup: node A `simpul network create --scope 1709 --scope 1702`, node B enrolled by"
        f" file with the same scopes; {res.households:,} households imported into A with"
        f" `simpul import` ({res.import_s:.0f} s): {res.entries:,} feed entries,"
        f" {res.change_bytes / 1e6:.1f} MB of raw Automerge changes. A is a `simpul node`"
        " process (`SIMPUL_DISCOVERY=off --sync-port 0 --sync-period 3600`), the server of"
        " every session. B is a child process of the benchmark that opens its store like a"
        " node (`open_node`, `SyncEngine`, `client_context`) and runs one"
        " `sync_with(engine, url, context, trust)` per session on command, timed around"
        " that call (pull, plus push when A lacks something). Bytes on the wire: B connects"
        " through a byte-counting TCP proxy on 127.0.0.1 that forwards to A's sync port"
        " (TCP payload both ways, TLS included, TCP/IP headers not). Peak RSS: `VmHWM` of"
        " each process.",
        "",
        "| workload | measure | median | all runs | target | holds | PouchDB 9 |",
        "| --- | --- | ---: | --- | --- | --- | ---: |",
        f"| W1 initial sync, {res.households:,} households to an empty node"
        f" ({len(w1_s)} runs, fresh B and fresh A each) | time (s) | {med(w1_s):.2f}"
        f" | {fmt_list(w1_s, 2)} | ≤ {TARGET_W1_S:.0f} s | {verdict(med(w1_s) <= TARGET_W1_S)}"
        f" | {POUCHDB['w1_s']} |",
        f"| | bytes on the wire (MB) | {med(w1_mb):.2f} | {fmt_list(w1_mb, 2)}"
        f" | ≤ {TARGET_W1_MB:.0f} MB | {verdict(med(w1_mb) <= TARGET_W1_MB)} |"
        f" {POUCHDB['w1_mb']} |",
        f"| | peak RSS of B, receiving (MB) | {med(b_rss):.0f} | {fmt_list(b_rss, 0)}"
        f" | ≤ {TARGET_RSS_MB:.0f} MB | {verdict(max(b_rss) <= TARGET_RSS_MB)}"
        f" | {POUCHDB['w1_rss']} |",
        f"| | peak RSS of A, sending (MB) | {med(a_rss):.0f} | {fmt_list(a_rss, 0)}"
        f" | ≤ {TARGET_RSS_MB:.0f} MB | {verdict(max(a_rss) <= TARGET_RSS_MB)} | |",
        f"| W2 {res.w2_edits:,} households (1%) edited on each side, then one session"
        f" ({len(w2_s)} runs) | time (s) | {med(w2_s):.3f} | {fmt_list(w2_s, 3)}"
        f" | ≤ {TARGET_W2_S:.0f} s | {verdict(med(w2_s) <= TARGET_W2_S)} | {POUCHDB['w2_s']} |",
        f"| | bytes on the wire (KB) | {med(w2_kb):.0f} | {fmt_list(w2_kb, 0)} | | |"
        f" {POUCHDB['w2_mb'] * 1000:.0f} |",
        f"| W3 no-op session, converged nodes ({len(w3_ms)} runs) | time, direct (ms)"
        f" | {med(w3_ms):.1f} | {fmt_list(w3_ms, 1)} | ≤ {TARGET_W3_MS:.0f} ms"
        f" | {verdict(med(w3_ms) <= TARGET_W3_MS)} | {POUCHDB['w3_s'] * 1000:.0f} |",
        f"| | time, through the proxy (ms) | {med(w3p_ms):.1f} | {fmt_list(w3p_ms, 1)} | | | |",
        f"| | bytes on the wire, both directions (B) | {med(w3_b):,.0f} | {fmt_list(w3_b, 0)}"
        f" | ≤ {TARGET_W3_RESUMED_B:,} B resumed | {verdict(max(w3_b) <= TARGET_W3_RESUMED_B)}"
        " | 48 KB |",
        f"| | bytes, first connection (fresh TLS context, full handshake) (B)"
        f" | {med([float(s.wire) for s in res.w3_first]):,.0f} | | ≤ {TARGET_W3_KB * 1000:,.0f} B"
        f" | {verdict(max(s.wire for s in res.w3_first) <= TARGET_W3_KB * 1000)} | |",
        "",
        "Load average (1 min) before each run: W1 "
        + fmt_list([s.load for s in res.w1], 2)
        + "; W2 "
        + fmt_list([s.load for s in res.w2], 2)
        + "; W3 "
        + fmt_list([s.load for s in res.w3_direct], 2)
        + ".",
        "",
        *(
            [
                "Sessions that failed (reported, not counted in the medians; B keeps what it"
                " committed): "
                + "; ".join(f"{w} after {t:.1f} s: {why}" for w, t, why in res.failed)
                + ".",
                "",
            ]
            if res.failed
            else []
        ),
        "### Detail and baselines (same process, same machine)",
        "",
        "| measure | value | ratio |",
        "| --- | --- | --- |",
        f"| W1 baseline: read every entry of A with plain `sqlite3` (median of 3, s)"
        f" | {read_s:.2f} ({fmt_list(res.read_s, 2)}) | W1 = {med(w1_s) / read_s:.0f}x |",
        f"| W1 bytes floor: the raw changes ({res.change_bytes / 1e6:.1f} MB) compressed"
        f" with zstd level 3 in 1,000-entry frames (MB) | {res.zstd_bytes / 1e6:.2f}"
        f" | W1 wire = {med(w1_mb) * 1e6 / res.zstd_bytes:.2f}x |",
        f"| W1 bytes per entry on the wire | {per_entry:.0f} B"
        f" (zstd floor {res.zstd_bytes / max(res.entries, 1):.0f} B, raw"
        f" {res.change_bytes / max(res.entries, 1):.0f} B) | |",
        f"| W1 entries per second | {res.entries / med(w1_s):,.0f} | |",
        f"| W1 connections per session | {fmt_list([float(s.connections) for s in res.w1], 0)} | |",
        f"| W2 entries each way per session | {res.w2_edits} | |",
        "| W2 edits before each session, seconds on A / on B (one `RecordStore.update`"
        " each, not part of the session) | "
        + "; ".join(f"{a:.1f} / {b:.1f}" for a, b in res.w2_edit_s)
        + " | |",
        f"| W3 baseline: plain mutual-TLS 1.3 round trip on loopback, same certificates,"
        " resuming the warm-up's session"
        f" (connect, handshake, {TLS_PAYLOAD} B each way; median of {len(res.tls_ms)}, ms)"
        f" | {tls_ms:.1f} ({fmt_list(res.tls_ms, 1)}) | W3 = {med(w3_ms) / tls_ms:.1f}x |",
        f"| W3 baseline bytes: the same round trip through the proxy | {res.tls_wire:,} B"
        f" | W3 = {med(w3_b) / max(res.tls_wire, 1):.2f}x |",
        "",
    ]
    for title, text in res.profiles.items():
        lines += [f"### Profile: {title}", "", "```", text, "```", ""]
    return "\n".join(lines)


# ----- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--w1-runs", type=int, default=3, help="W1 runs (default 3)")
    parser.add_argument("--w2-runs", type=int, default=5, help="W2 runs (default 5)")
    parser.add_argument("--w3-runs", type=int, default=7, help="W3 runs (default 7)")
    add_common_arguments(parser)
    parser.add_argument("--profile", action="store_true", help="profile W1 and W2 in any case")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (A, B, logs)")
    parser.add_argument("--client", type=Path, help=argparse.SUPPRESS)  # internal: run node B
    args = parser.parse_args(argv)
    if args.client is not None:
        asyncio.run(client_main(args.client))
        return 0
    if min(args.count, args.w1_runs, args.w2_runs, args.w3_runs) < 1:
        parser.error("--count and the run counts must be at least 1")

    csv_path = ensure_csv(args.count, args.cache_dir)
    work = Path(tempfile.mkdtemp(prefix="simpul-bench-sync-"))
    try:
        res = asyncio.run(bench(args, csv_path, work))
    except BaseException:
        args.keep = True  # the stores and logs of A and B show what went wrong
        raise
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    info = machine()
    section = report(res, args, info)
    print(section)
    if not args.no_docs:
        write_docs(section, info, SECTION)
        print(f"updated {DOCS.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
