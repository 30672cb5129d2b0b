#!/usr/bin/env python3
"""Soak (issue 13, "a soak of your own"): an office LAN, a hub and a village under chaos.

    sudo python bench/soak.py                              # the full soak, at most 15 min
    sudo python bench/soak.py --minutes 4 --offices 3 --households 300 --no-docs  # short

Not part of the test suite: it needs root (network namespaces) and minutes of two cores.
Every phase and every loop is bounded in count and in time; the whole run is bounded by
`--minutes` (default 15) and exits non-zero, after cleaning up, when a bound is hit.

What runs (all real processes, all traffic inside namespaces this script makes):

- `--offices` (default 5) office nodes, `simpul node` with discovery on, each on its own
  host of a bridged LAN of network namespaces (`tests/netns.py`): office0 made the network
  (`simpul network create --scope 1709`), the others are enrolled by file. Nobody runs
  `peer add`: they find each other by mDNS.
- `simpul hub` in the upstream namespace; office0 and office1 have a link to it (`wan0`),
  the others do not. Every office node is given `--hub`, so one of the two uplinks.
- a village node in a namespace with loopback only, reached only by a USB folder: `simpul
  usb sync DRIVE` on the village node, the folder copied to the last office node's drive
  folder, `simpul usb sync` there, and the folder copied back (a courier's round).
- one agent process per namespace (`bench/soak.py --agent`), the only way in: it makes
  the HTTP calls to the node of its namespace on 127.0.0.1 (JSON API with a token made by
  `simpul token create`, `/metrics`, the hub's status).

Phases:

1. Setup with the CLI: network, enrolments, hub admission, operator and token per node;
   `--households` synthetic households of region 1709 (`../shared/data/households.py`,
   the rows of other regions dropped) imported into office0 with `simpul import`.
2. Start: hub, office nodes, village node; wait (bounded) until the office and the hub
   hold the same feeds, then one courier round brings everything to the village.
3. Chaos, for `--chaos-seconds` (default 40% of the budget), bounded in events too:
   - workload through the JSON API: edits of `alamat` with unique values, bursts of the
     same field of one household edited at once on 2-3 nodes (the village too), creates;
   - kill -9 of random nodes (the uplink node first), restarted a few seconds later;
   - `ip link set eth0 down` on a random office host, up again 5-20 s later, and the same
     for the uplink host's `wan0`;
   - courier rounds, some with the office's `simpul usb sync` killed partway (a drive
     pulled mid-write), the half-written folder carried on as it is.
4. Heal: pending restarts and links done, every link up, every node running; courier
   rounds and polling (bounded) until every node, the village and the hub hold the same
   records with the same Automerge heads. Time to converge is from the start of healing.
5. Checks: every write the API answered 2xx for is in the converged documents (its
   change is there, and its value is the field's value, one of the values of a conflict
   shown in `_meta.conflicts`, or overwritten by a later change that saw it); every
   conflicted field shows in `_meta.conflicts` of `GET /api/v1/records/{id}` with heads
   equal to the store's; then every node and the hub are stopped and `simpul verify` runs
   on every data dir (the hub's network folder, copied); no `Traceback` in any log.
6. Prints a Markdown report and rewrites only the section "Soak (issue 13)" of
   `docs/benchmarks.md` (`--no-docs` to skip); exits 1 unless every check holds.

Clean-up: namespaces and every process in them are removed on every exit path (finally,
SIGTERM/SIGHUP/SIGINT, atexit).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import csv
import functools
import http.client
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))  # the test helpers: namespaces, enrolment, hub

from import_search import machine, publish, verdict  # noqa: E402

from simpul.node.usb_drive import TEMP_SUFFIX  # noqa: E402

SECTION = "## Soak (issue 13)"
HTTP_PORT, SYNC_PORT = 8470, 8471
HUB_PORT, HUB_STATUS_PORT = 8443, 8472
SCOPE = "1709"
SYNC_PERIOD = "5"
HUB_PERIOD = "5"
UPLINK_LEASE = "10"
PASSWORD = "kata-sandi-soak-123\n"
OPERATOR = "soak"
FIELD = "alamat"

NODE_START_S = 120.0  # a node prints its ready line within this (two loaded cores)
AGENT_HTTP_TIMEOUT_S = 30.0
AGENT_ANSWER_S = 60.0
USB_SYNC_S = 180.0
STOP_S = 30.0
INITIAL_SYNC_S = 240.0  # the office and the hub take the import within this
POLL_S = 3.0
CHAOS_GAP_S = (4.0, 10.0)
DOWN_S = (5.0, 20.0)
RESTART_AFTER_S = (2.0, 10.0)
COURIER_EVERY_S = 30.0
INTERRUPT_SHARE = 0.6  # of the courier rounds during chaos
INTERRUPT_AFTER_S = (0.15, 1.0)  # after spawning `simpul usb sync` (its start-up included)
MAX_DOWN = 2  # office nodes dead at once, at most
WRITE_GAP_S = (0.2, 0.6)
MAX_WRITE_STEPS = 5000
MAX_CHAOS_EVENTS = 500
MAX_COURIER_ROUNDS = 100
HOT_RECORDS = 40
CHECK_RESERVE_S = 120.0  # stop nodes, verify, read records: what is kept for after healing
READY = re.compile(rb"\(LAN sync on port \d+\)")
METRIC = re.compile(r"^(simpul_sync_(?:bytes|refusals|sessions)_total)\{([^}]*)\} (\d+)")


class SoakError(Exception):
    """The soak cannot go on (a node did not start, a bound was hit); the message says."""


def say(message: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {message}", file=sys.stderr, flush=True)


# ----- the agent: runs inside a namespace, makes the HTTP calls there -------------------


def agent_main() -> int:
    """JSON lines on stdin {port, method, path, token, body}; one answer line each:
    {status, body}; status 0 when the call failed (refused, reset, timed out)."""
    for line in sys.stdin:
        request = json.loads(line)
        connection = http.client.HTTPConnection(
            "127.0.0.1", request["port"], timeout=AGENT_HTTP_TIMEOUT_S
        )
        headers = {"Content-Type": "application/json", "Connection": "close"}
        if request.get("token"):
            headers["Authorization"] = "Bearer " + request["token"]
        body = request.get("body")
        try:
            connection.request(
                request["method"], request["path"],
                body=None if body is None else json.dumps(body).encode(), headers=headers,
            )  # fmt: skip
            response = connection.getresponse()
            status, text = response.status, response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as exc:
            status, text = 0, f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()
        sys.stdout.write(json.dumps({"status": status, "body": text}) + "\n")
        sys.stdout.flush()
    return 0


class Agent:
    """The bench's handle on one namespace's agent process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lock = asyncio.Lock()

    @classmethod
    async def start(cls, net: Any, namespace: str, log: Path) -> Agent:
        with log.open("ab") as err:
            process = await net.spawn_in(
                namespace, [sys.executable, str(Path(__file__).resolve()), "--agent"],
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
            )  # fmt: skip
        return cls(process)

    async def call(
        self, port: int, method: str, path: str, token: str = "", body: Any = None
    ) -> tuple[int, Any]:
        """(HTTP status, parsed JSON or text); status 0 when no answer came."""
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"port": port, "method": method, "path": path, "token": token, "body": body}
        async with self.lock:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            await self.process.stdin.drain()
            line = await asyncio.wait_for(self.process.stdout.readline(), AGENT_ANSWER_S)
        if not line:
            raise SoakError(f"agent of {method} {path} exited")
        answer = json.loads(line)
        try:
            return answer["status"], json.loads(answer["body"])
        except ValueError:
            return answer["status"], answer["body"]

    async def close(self) -> None:
        if self.process.returncode is None and self.process.stdin is not None:
            self.process.stdin.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.process.wait(), 10)


# ----- nodes ------------------------------------------------------------------------------


def parse_metrics(text: str) -> Counter[str]:
    """The sync counters of a node's /metrics: 'name{labels}' -> value."""
    found: Counter[str] = Counter()
    for line in text.splitlines():
        match = METRIC.match(line)
        if match:
            found[f"{match.group(1)}{{{match.group(2)}}}"] += int(match.group(3))
    return found


@dataclass
class SoakNode:
    """One `simpul node` in a namespace: restartable, its output appended to `log`."""

    name: str
    namespace: str
    data_dir: Path
    log: Path
    token: str
    node_id: str
    agent: Agent
    extra: tuple[str, ...] = ()
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    ready: bool = False  # printed its ready line, not killed since
    counters_done: Counter[str] = field(default_factory=Counter)  # of earlier runs
    counters_now: Counter[str] = field(default_factory=Counter)  # last scrape of this run

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, net: Any) -> None:
        env = {k: v for k, v in os.environ.items() if k != "SIMPUL_DISCOVERY"}
        env["PYTHONUNBUFFERED"] = "1"
        argv = [sys.executable, "-m", "simpul.node", "--data-dir", str(self.data_dir), "node",
                "--listen", f"0.0.0.0:{HTTP_PORT}", "--sync-port", str(SYNC_PORT),
                "--sync-period", SYNC_PERIOD, *self.extra]  # fmt: skip
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = await net.spawn_in(self.namespace, argv, stdout=out, stderr=out, env=env)
        self.starts += 1
        self.counters_now = Counter()
        async with asyncio.timeout(NODE_START_S):
            while True:
                with self.log.open("rb") as log:
                    log.seek(offset)
                    if READY.search(log.read()):
                        self.ready = True
                        return
                if self.process.returncode is not None:
                    raise SoakError(f"{self.name} exited at start: see {self.log}")
                await asyncio.sleep(0.2)

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await self.agent.call(HTTP_PORT, method, path, self.token, body)

    async def scrape(self) -> None:
        """Remember this run's sync counters (they start at 0 with every run)."""
        if not self.running:
            return
        status, text = await self.api("GET", "/metrics")
        if status == 200 and isinstance(text, str):
            self.counters_now = parse_metrics(text)

    def counters(self) -> Counter[str]:
        return self.counters_done + self.counters_now

    async def kill9(self) -> None:
        await self.scrape()
        assert self.process is not None
        self.ready = False
        self.process.kill()
        await self.process.wait()
        self.counters_done += self.counters_now
        self.counters_now = Counter()

    async def stop(self) -> None:
        """SIGTERM and wait; kill -9 if it does not stop in time."""
        if not self.running:
            return
        await self.scrape()
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), STOP_S)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self.counters_done += self.counters_now
        self.counters_now = Counter()

    async def status(self) -> dict[str, Any] | None:
        if not self.running:
            return None
        code, body = await self.api("GET", "/api/v1/status")
        return body if code == 200 and isinstance(body, dict) else None


# ----- setup ------------------------------------------------------------------------------


def cli(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    from conftest import simpul_cli

    done = simpul_cli(data_dir, *args, stdin=stdin)
    if done.returncode != 0:
        raise SoakError(f"simpul {' '.join(args)} ({data_dir.name}): {done.stderr.strip()}")
    return done.stdout


def make_token(data_dir: Path) -> str:
    """An admin operator and an API token for it, with the command line."""
    cli(data_dir, "operator", "add", OPERATOR, "--role", "admin", "--password-stdin",
        stdin=PASSWORD)  # fmt: skip
    return cli(data_dir, "token", "create", OPERATOR).strip().splitlines()[-1]


def households_csv(count: int, seed: int) -> tuple[str, list[str]]:
    """`count` households of region SCOPE from the shared generator, as CSV; their ids."""
    from conftest import generate

    text = generate(count * 3, "csv", seed)  # about half of them lie in SCOPE
    rows = list(csv.DictReader(io.StringIO(text)))
    ids: dict[str, None] = {}  # in the generator's order
    for row in rows:
        if row["KODE WILAYAH"].startswith(SCOPE):
            ids[row["ID KELUARGA"]] = None
            if len(ids) == count:
                break
    if len(ids) < count:
        raise SoakError(f"the generator gave {len(ids)} households of {SCOPE}, not {count}")
    keep = set(ids)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(row for row in rows if row["ID KELUARGA"] in keep)
    return out.getvalue(), list(ids)


def new_households(seed: int) -> list[dict[str, Any]]:
    """Households for the creates of the workload (another seed, region SCOPE only)."""
    from conftest import generate

    made = [json.loads(line) for line in generate(600, "jsonl", seed).splitlines()]
    return [h for h in made if h["kode_wilayah"].startswith(SCOPE)]


@dataclass
class Setup:
    offices: list[Path]
    village: Path
    hub: Path
    network_id: str
    tokens: dict[Path, str]
    ids: list[str]
    import_s: float


def prepare(work: Path, offices: int, households: int, seed: int) -> Setup:
    """Data dirs made and joined with the real command line; the import on office0."""
    from hub_processes import admit_hub
    from test_network_cli import create_network, enrol_by_file

    dirs = [work / f"office{i}" for i in range(offices)]
    network_id = create_network(dirs[0])["network_id"]
    village, hub = work / "village", work / "hub"
    for device in [*dirs[1:], village]:
        enrol_by_file(dirs[0], device, work)
    admit_hub(dirs[0], hub, work)
    tokens = {d: make_token(d) for d in [*dirs, village]}
    text, ids = households_csv(households, seed)
    path = work / "households.csv"
    path.write_text(text, encoding="utf-8")
    started = time.monotonic()
    summary = json.loads(cli(dirs[0], "import", "--json", str(path)))
    if summary["created"] != households:
        raise SoakError(f"imported {summary['created']} households, not {households}")
    return Setup(dirs, village, hub, network_id, tokens, ids, time.monotonic() - started)


# ----- the run ------------------------------------------------------------------------------


@dataclass
class Write:
    """One write through the API and what it answered."""

    node: str
    record_id: str
    kind: str  # create | edit
    value: str
    status: int
    heads: list[str]
    burst: bool


@dataclass
class Tally:
    writes: list[Write] = field(default_factory=list)
    bursts: int = 0
    kills: list[str] = field(default_factory=list)
    uplink_kills: int = 0
    flaps: int = 0
    wan_flaps: int = 0
    courier_rounds: int = 0
    usb_interrupted: Counter[str] = field(default_factory=Counter)
    usb_failures: list[str] = field(default_factory=list)
    start_failures: list[str] = field(default_factory=list)
    usb_bytes: int = 0
    events: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)


class Soak:
    """The running soak: namespaces, processes, the workload and the chaos."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.rng = random.Random(args.seed)
        self.tally = Tally()
        self.net: Any = None
        self.nodes: list[SoakNode] = []  # offices, then the village
        self.hub_process: asyncio.subprocess.Process | None = None
        self.hub_agent: Agent | None = None
        self.agents: list[Agent] = []
        self.down: set[int] = set()  # office hosts whose eth0 is down
        self.wan_down: set[int] = set()
        self.pending: set[asyncio.Task[None]] = set()
        self.setup: Setup | None = None
        self.hot: list[str] = []
        self.created: list[str] = []
        self.fresh: list[dict[str, Any]] = []
        self.serial = 0
        self.usb_lock = asyncio.Lock()

    @property
    def offices(self) -> list[SoakNode]:
        return self.nodes[:-1]

    @property
    def village(self) -> SoakNode:
        return self.nodes[-1]

    @property
    def courier_office(self) -> SoakNode:
        return self.offices[-1]

    def event(self, text: str) -> None:
        self.tally.events.append(f"{time.monotonic() - self.t0:7.1f}s {text}")
        say(text)

    # -- building ------------------------------------------------------------------------

    async def build(self) -> None:
        from hub_processes import start_hub
        from netns import Lan, NetnsUnavailable, netns_unavailable_reason

        from simpul.crypto.node_key import NodeKey

        self.t0 = time.monotonic()
        reason = netns_unavailable_reason()
        if reason:
            raise SoakError(reason)
        started = time.monotonic()
        self.setup = await asyncio.to_thread(
            prepare, self.work, self.args.offices, self.args.households, self.args.seed
        )
        self.tally.phases["setup (CLI: network, enrolment, hub, tokens, import)"] = (
            time.monotonic() - started
        )
        self.tally.phases["of which `simpul import` on office0"] = self.setup.import_s
        self.event(f"setup done: {len(self.setup.ids)} households imported into office0")
        self.hot = self.rng.sample(self.setup.ids, min(HOT_RECORDS, len(self.setup.ids)))
        self.fresh = new_households(self.args.seed + 1000)

        self.net = Lan(self.args.offices)
        try:
            self.net.create()
        except NetnsUnavailable as exc:
            raise SoakError(f"cannot build network namespaces: {exc}") from exc
        net = self.net
        atexit.register(net._delete_namespaces)  # the last resort; close() normally does it
        upstream = net.add_upstream()
        island = net.add_island("village")
        for i in (0, 1):
            net.link_upstream(i)
        hub_url = f"https://{upstream.address}:{HUB_PORT}"
        logs = self.work / "logs"
        logs.mkdir()
        (self.work / "drive-village").mkdir()  # the courier's drive, empty, at the village
        spawn = functools.partial(net.spawn_in, upstream.namespace)
        hub = await start_hub(
            self.setup.hub, f"{upstream.address}:{HUB_PORT}", f"127.0.0.1:{HUB_STATUS_PORT}",
            logs / "hub.log", spawn,
        )  # fmt: skip
        self.hub_process = hub.process
        self.hub_agent = await Agent.start(net, upstream.namespace, logs / "agent-up.log")
        self.agents.append(self.hub_agent)
        hub_args = ("--hub", hub_url, "--hub-period", HUB_PERIOD, "--uplink-lease", UPLINK_LEASE)
        places = [
            (f"office{i}", h.namespace, d, hub_args)
            for i, (h, d) in enumerate(zip(net.hosts, self.setup.offices, strict=True))
        ]
        places.append(("village", island, self.setup.village, ()))  # fmt: skip
        for name, namespace, data_dir, extra in places:
            agent = await Agent.start(net, namespace, logs / f"agent-{name}.log")
            self.agents.append(agent)
            node_id = NodeKey.load(data_dir / "node.key").node_id_hex
            self.nodes.append(SoakNode(
                name, namespace, data_dir, logs / f"{name}.log", self.setup.tokens[data_dir],
                node_id, agent, extra,
            ))  # fmt: skip
        await asyncio.gather(*(node.start(net) for node in self.nodes))
        self.event(f"hub and {len(self.nodes)} nodes running")

    # -- reading state ---------------------------------------------------------------------

    async def hub_facts(self) -> dict[str, Any] | None:
        assert self.hub_agent is not None
        code, body = await self.hub_agent.call(HUB_STATUS_PORT, "GET", "/api/v1/status")
        if code != 200 or not isinstance(body, dict) or not body.get("networks"):
            return None
        return body["networks"][0]

    async def same_feeds(self, nodes: list[SoakNode], hub: bool) -> bool:
        """Cheap check: every node (and the hub) holds the same frontier / entry count."""
        facts = await asyncio.gather(*(node.status() for node in nodes))
        if any(f is None or f["pending"] for f in facts):
            return False
        first = facts[0]
        assert first is not None
        if any(f["frontier"] != first["frontier"] for f in facts if f is not None):
            return False
        if hub:
            held = await self.hub_facts()
            return held is not None and held["entries"] == first["entries"]
        return True

    def all_heads(self) -> dict[str, dict[str, list[str]]]:
        import stored

        from simpul.node.hub_networks import network_folder

        assert self.setup is not None
        heads = {node.name: stored.heads(node.data_dir) for node in self.nodes}
        heads["hub"] = stored.heads(network_folder(self.setup.hub, self.setup.network_id))
        return heads

    def differences(self) -> int:
        """Records whose heads differ from office0's, or that a holder lacks, summed."""
        heads = self.all_heads()
        reference = heads["office0"]
        return sum(
            len(set(reference) ^ set(theirs))
            + sum(1 for rid in set(reference) & set(theirs) if reference[rid] != theirs[rid])
            for theirs in heads.values()
        )

    # -- the courier ---------------------------------------------------------------------

    async def usb_sync(self, node: SoakNode, drive: Path, kill_after: float | None) -> str:
        """`simpul usb sync DRIVE` for `node`: "done", or with `kill_after`, killed (kill
        -9) as soon as a file is being written to the drive ("killed mid-write") or after
        `kill_after` s ("killed")."""
        argv = [sys.executable, "-m", "simpul.node", "--data-dir", str(node.data_dir),
                "usb", "sync", str(drive), "--json"]  # fmt: skip
        log = self.work / "logs" / f"usb-{node.name}.log"
        with log.open("ab") as out:
            out.write(f"--- {datetime.now(UTC).isoformat()} usb sync\n".encode())
            out.flush()
            process = await self.net.spawn_in(node.namespace, argv, stdout=out, stderr=out)
        outcome = "done"
        try:
            async with asyncio.timeout(kill_after or USB_SYNC_S):
                while process.returncode is None:
                    if kill_after is not None and any(drive.rglob(f"*{TEMP_SUFFIX}")):
                        outcome = "killed mid-write"
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(process.wait(), 0.005)
        except TimeoutError as exc:
            if kill_after is None:
                process.kill()
                raise SoakError(f"usb sync on {node.name} took over {USB_SYNC_S:.0f} s") from exc
            outcome = "killed"
        if process.returncode is None:
            process.kill()
            await process.wait()
            return outcome
        if process.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:]
            self.tally.usb_failures.append(f"{node.name}: exit {process.returncode}: {tail}")
        return "done"

    def carry(self, source: Path, target: Path) -> None:
        """The courier takes the drive from one place to the other: the folder, as it is."""
        shutil.rmtree(target, ignore_errors=True)
        if source.exists():
            shutil.copytree(source, target)
            self.tally.usb_bytes += sum(p.stat().st_size for p in target.rglob("*") if p.is_file())

    async def courier_round(self, interrupt: bool) -> None:
        """Village syncs, drive to the office, office syncs (maybe killed partway), back."""
        at_village, at_office = self.work / "drive-village", self.work / "drive-office"
        async with self.usb_lock:
            self.tally.courier_rounds += 1
            victim = self.rng.choice(("village", "office")) if interrupt else None
            kill_after = self.rng.uniform(*INTERRUPT_AFTER_S)
            self.event(
                f"courier round {self.tally.courier_rounds}"
                + (
                    f": usb sync at the {victim} to be killed within {kill_after:.2f} s"
                    if victim
                    else ""
                )
            )
            outcomes = [
                await self.usb_sync(
                    self.village, at_village, kill_after if victim == "village" else None
                )
            ]
            self.carry(at_village, at_office)
            outcomes.append(
                await self.usb_sync(
                    self.courier_office, at_office, kill_after if victim == "office" else None
                )
            )
            self.carry(at_office, at_village)
            outcomes.append(await self.usb_sync(self.village, at_village, None))
            for outcome in outcomes:
                if outcome != "done":
                    self.tally.usb_interrupted[outcome] += 1
                    self.event(f"usb sync at the {victim} {outcome}")

    # -- phases ------------------------------------------------------------------------

    async def initial_sync(self) -> None:
        started = time.monotonic()
        async with asyncio.timeout(INITIAL_SYNC_S):
            while not await self.same_feeds(self.offices, hub=True):
                await asyncio.sleep(POLL_S)
            await self.courier_round(interrupt=False)
            while not await self.same_feeds(self.nodes, hub=False):
                await asyncio.sleep(POLL_S)
        self.tally.phases["initial sync (office LAN, hub, one courier round)"] = (
            time.monotonic() - started
        )
        self.event("initial sync done: every node and the hub hold the import")

    async def write(self, node: SoakNode, record_id: str, burst: bool) -> None:
        self.serial += 1
        value = f"Jl. Soak {node.name} {self.serial}"
        code, body = await node.api("PATCH", f"/api/v1/records/{record_id}", {FIELD: value})
        heads = body["_meta"]["heads"] if 200 <= code < 300 else []
        self.tally.writes.append(Write(node.name, record_id, "edit", value, code, heads, burst))

    async def create(self, node: SoakNode) -> None:
        if not self.fresh:
            return
        household = self.fresh.pop()
        code, body = await node.api("POST", "/api/v1/records", household)
        heads = body["_meta"]["heads"] if 200 <= code < 300 else []
        self.tally.writes.append(
            Write(node.name, household["id"], "create", household[FIELD], code, heads, False)
        )
        if 200 <= code < 300:
            self.created.append(household["id"])

    async def workload(self, until: float) -> None:
        for _ in range(MAX_WRITE_STEPS):
            if time.monotonic() >= until:
                return
            live = [n for n in self.nodes if n.running]
            roll = self.rng.random()
            if roll < 0.35 and len(live) >= 2:
                record_id = self.rng.choice(self.hot)
                group = self.rng.sample(live, min(len(live), self.rng.choice((2, 3))))
                self.tally.bursts += 1
                await asyncio.gather(*(self.write(n, record_id, True) for n in group))
            elif roll < 0.85 and live:
                pool = self.hot + self.created[-50:]
                await self.write(self.rng.choice(live), self.rng.choice(pool), False)
            elif live:
                await self.create(self.rng.choice(live))
            await asyncio.sleep(self.rng.uniform(*WRITE_GAP_S))

    def later(self, delay: float, action: Any) -> None:
        """Run `action()` (a coroutine function) after `delay` s; awaited when healing."""

        async def run() -> None:
            await asyncio.sleep(delay)
            try:
                await action()
            except SoakError as exc:  # a node that does not start again: a finding
                self.tally.start_failures.append(str(exc))
                self.event(f"failed: {exc}")

        task = asyncio.create_task(run())
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def uplink_index(self) -> int | None:
        """Which office node uplinks now, by what the office nodes' status says."""
        for node in self.offices:
            facts = await node.status()
            uplink = (facts or {}).get("uplink") or {}
            for i, office in enumerate(self.offices):
                if uplink.get("uplink_node") == office.node_id:
                    return i
        return None

    async def kill_one(self) -> None:
        candidates = [i for i, n in enumerate(self.nodes) if n.running and n.ready]
        dead = sum(1 for n in self.offices if not n.running)
        if dead >= MAX_DOWN:
            candidates = [i for i in candidates if i == len(self.nodes) - 1]
        uplink = await self.uplink_index()
        if (
            uplink is not None
            and uplink in candidates
            and (not self.tally.uplink_kills or self.rng.random() < 0.3)
        ):
            index = uplink
        elif candidates:
            index = self.rng.choice(candidates)
        else:
            return
        node = self.nodes[index]
        await node.kill9()
        self.tally.kills.append(node.name)
        self.tally.uplink_kills += index == uplink
        self.event(f"kill -9 {node.name}" + (" (the uplink node)" if index == uplink else ""))
        self.later(self.rng.uniform(*RESTART_AFTER_S), functools.partial(self.restart, node))

    async def restart(self, node: SoakNode) -> None:
        if not node.running:
            await node.start(self.net)
            self.event(f"restarted {node.name}")

    async def flap(self) -> None:
        up = [i for i in range(len(self.offices)) if i not in self.down]
        if not up:
            return
        i = self.rng.choice(up)
        self.net.link_down(i)
        self.down.add(i)
        self.tally.flaps += 1
        self.event(f"link down: office{i} eth0")
        self.later(self.rng.uniform(*DOWN_S), functools.partial(self.link_up, i))

    async def link_up(self, i: int) -> None:
        if i in self.down:
            self.net.link_up(i)
            self.down.discard(i)
            self.event(f"link up: office{i} eth0")

    async def wan_flap(self) -> None:
        from netns import UPSTREAM_IFACE, ip

        uplink = await self.uplink_index()
        i = uplink if uplink in (0, 1) else self.rng.choice((0, 1))
        if i in self.wan_down:
            return
        ip("-n", self.net.hosts[i].namespace, "link", "set", UPSTREAM_IFACE, "down")
        self.wan_down.add(i)
        self.tally.wan_flaps += 1
        self.event(f"link down: office{i} wan0")
        self.later(self.rng.uniform(*DOWN_S), functools.partial(self.wan_up, i))

    async def wan_up(self, i: int) -> None:
        from netns import UPSTREAM_IFACE, ip

        if i in self.wan_down:
            ip("-n", self.net.hosts[i].namespace, "link", "set", UPSTREAM_IFACE, "up")
            self.wan_down.discard(i)
            self.event(f"link up: office{i} wan0")

    async def chaos(self, until: float) -> None:
        actions = (self.kill_one, self.flap, self.wan_flap)
        for _ in range(MAX_CHAOS_EVENTS):
            await asyncio.sleep(self.rng.uniform(*CHAOS_GAP_S))
            if time.monotonic() >= until:
                return
            await self.rng.choices(actions, weights=(4, 4, 1))[0]()

    async def courier(self, until: float) -> None:
        for _ in range(MAX_COURIER_ROUNDS):
            await asyncio.sleep(COURIER_EVERY_S)
            if time.monotonic() >= until:
                return
            await self.courier_round(self.rng.random() < INTERRUPT_SHARE)

    async def heal(self, until: float) -> float | None:
        """Everything back up; courier rounds until all converge. Seconds it took, or None
        when they did not within `until`."""
        if self.pending:
            await asyncio.gather(*list(self.pending))
        for i in list(self.down):
            await self.link_up(i)
        for i in list(self.wan_down):
            await self.wan_up(i)
        for node in self.nodes:
            await self.restart(node)
        started = time.monotonic()
        self.event("healing: chaos stopped, every link up, every node running")
        rounds = 0
        while time.monotonic() < until:
            if await self.same_feeds(self.offices, hub=True):
                if await self.same_feeds(self.nodes, hub=False) and not self.differences():
                    return time.monotonic() - started
                if rounds < MAX_COURIER_ROUNDS:
                    rounds += 1
                    await self.courier_round(interrupt=False)
                    continue
            await asyncio.sleep(POLL_S)
        self.event(f"no convergence within {until - started:.0f} s of healing:"
                   f" {self.differences()} record differences")  # fmt: skip
        return None

    # -- checks ----------------------------------------------------------------------------

    async def check_writes(self) -> dict[str, Any]:
        """Every acknowledged write against office0's converged documents, and the API's
        view of every record written (heads equal to the store's, conflicts shown)."""
        import stored

        from simpul.sync.conflicts import competitors

        docs = stored.documents(self.offices[0].data_dir)
        acked = [w for w in self.tally.writes if 200 <= w.status < 300]
        lost: list[str] = []
        ancestry: dict[str, dict[str, set[str]]] = {}
        for record_id in {w.record_id for w in acked}:
            doc = docs.get(record_id)
            if doc is None:
                continue
            seen: dict[str, set[str]] = {}
            for change in doc.changes():  # causal order
                mine = {d.hex() for d in change.deps}
                for dep in change.deps:
                    mine |= seen.get(dep.hex(), set())
                seen[change.hash.hex()] = mine
            ancestry[record_id] = seen
        api_node = self.offices[1 % len(self.offices)]
        conflicts_shown = 0
        api_mismatch: list[str] = []
        for record_id in sorted({w.record_id for w in acked}):
            doc = docs.get(record_id)
            code, record = await api_node.api("GET", f"/api/v1/records/{record_id}")
            if doc is None or code != 200:
                lost.append(f"{record_id}: not held (API {code})")
                continue
            if record["_meta"]["heads"] != sorted(h.hex() for h in doc.heads):
                api_mismatch.append(f"{record_id}: API heads differ from the store")
            shown = {
                c["field"]: [v["value"] for v in c["values"]] for c in record["_meta"]["conflicts"]
            }
            conflicts_shown += bool(shown)
            latest = competitors(doc, (FIELD,))
            if len({repr(c.value) for c in latest}) > 1 and FIELD not in shown:
                api_mismatch.append(
                    f"{record_id}: {len(latest)} writers of {FIELD}, no conflict shown"
                )
            seen = ancestry[record_id]
            tops = {c.change for c in latest}
            for write in (w for w in acked if w.record_id == record_id):
                missing = [h for h in write.heads if h not in seen]
                if missing:
                    lost.append(
                        f"{write.node} {write.kind} {record_id}: change {missing[0]} missing"
                    )
                    continue
                if write.kind == "create":
                    continue
                head = write.heads[0]
                present = record.get(FIELD) == write.value or write.value in shown.get(FIELD, [])
                overwritten = any(head in seen[top] for top in tops)
                if not (present or overwritten):
                    lost.append(f"{write.node} edit {record_id}: {write.value!r} neither held nor "
                                "overwritten by a change that saw it")  # fmt: skip
        return {
            "acked": len(acked),
            "lost": lost,
            "api_mismatch": api_mismatch,
            "records_written": len({w.record_id for w in acked}),
            "conflicts_shown": conflicts_shown,
        }

    async def stop_all(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes))
        if self.hub_process is not None and self.hub_process.returncode is None:
            self.hub_process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.hub_process.wait(), STOP_S)
            except TimeoutError:
                self.hub_process.kill()

    def verify_all(self) -> dict[str, str]:
        """`simpul verify` of every data dir; the hub's network folder on a copy (verify
        would give a network folder a node key of its own)."""
        from simpul.node.hub_networks import network_folder

        assert self.setup is not None
        copy = self.work / "hub-network-copy"
        shutil.copytree(network_folder(self.setup.hub, self.setup.network_id), copy)
        results = {}
        for name, data_dir in [*((n.name, n.data_dir) for n in self.nodes), ("hub", copy)]:
            done = subprocess.run(
                [sys.executable, "-m", "simpul.node", "--data-dir", str(data_dir), "verify"],
                capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            feeds = done.stdout.count("entries verified")
            results[name] = (
                f"ok ({feeds} feeds)" if done.returncode == 0
                else f"FAILED: {done.stderr.strip()[-300:]}"
            )  # fmt: skip
        return results

    def log_findings(self) -> tuple[dict[str, int], Counter[str]]:
        """Tracebacks per log file; ERROR lines and the last line of each traceback (the
        exception), numbers and hex ids blanked, counted."""
        tracebacks, errors = {}, Counter()
        for log in sorted((self.work / "logs").glob("*.log")):
            text = log.read_text(errors="replace")
            tracebacks[log.name] = text.count("Traceback")
            in_traceback = False
            for line in text.splitlines():
                if line.startswith("Traceback"):
                    in_traceback = True
                    continue
                if in_traceback and line.startswith((" ", "^")):
                    continue
                if in_traceback or " ERROR " in line:
                    shape = line.split(" ERROR ", 1)[-1] if not in_traceback else line
                    shape = re.sub(r"[0-9]+", "N", re.sub(r"[0-9a-f]{16,}", "…", shape))
                    errors[f"{log.stem}: {shape[:160]}"] += 1
                in_traceback = False
        return tracebacks, errors

    async def run(self) -> dict[str, Any]:
        budget = self.args.minutes * 60
        deadline = time.monotonic() + budget
        async with asyncio.timeout(budget):
            await self.build()
            await self.initial_sync()
            heal_bound = max(60.0, budget * 0.25)
            reserve = max(45.0, min(CHECK_RESERVE_S, budget * 0.15))
            now = time.monotonic()
            chaos_end = min(now + self.args.chaos_seconds, deadline - heal_bound - reserve)
            if chaos_end - now < 30:
                raise SoakError(
                    f"setup left {deadline - now:.0f} s: too little for chaos and healing"
                )
            self.event(f"chaos for {chaos_end - now:.0f} s")
            started = time.monotonic()
            await asyncio.gather(
                self.workload(chaos_end), self.chaos(chaos_end), self.courier(chaos_end)
            )
            self.tally.phases["chaos (workload, kills, flaps, courier)"] = (
                time.monotonic() - started
            )
            healing = time.monotonic()
            converge_s = await self.heal(deadline - reserve)
            self.tally.phases["healing, to convergence"] = time.monotonic() - healing
            if converge_s is not None:
                self.event(f"converged {converge_s:.1f} s after healing began")
            writes = await self.check_writes()
            hub = await self.hub_facts() or {}
            records = len(self.all_heads()["office0"])
            differences = 0 if converge_s is not None else self.differences()
            await self.stop_all()
            verified = await asyncio.to_thread(self.verify_all)
        tracebacks, errors = self.log_findings()
        return {
            "converge_s": converge_s, "differences": differences, "writes": writes,
            "hub": hub, "records": records, "verified": verified, "tracebacks": tracebacks,
            "errors": errors,
        }  # fmt: skip

    async def close(self) -> None:
        for task in list(self.pending):
            task.cancel()
        for agent in self.agents:
            with contextlib.suppress(Exception):
                await agent.close()
        if self.net is not None:
            await self.net.close()


# ----- report -----------------------------------------------------------------------------


def byte_totals(nodes: list[SoakNode]) -> Counter[str]:
    totals: Counter[str] = Counter()
    for node in nodes:
        for key, value in node.counters().items():
            if key.startswith("simpul_sync_bytes_total"):
                totals[key.removeprefix("simpul_sync_bytes_total")] += value
    return totals


def report(
    soak: Soak, result: dict[str, Any], info: dict[str, str], args: argparse.Namespace
) -> str:
    tally, writes = soak.tally, result["writes"]
    attempted = Counter(w.kind for w in tally.writes)
    acked = Counter(w.kind for w in tally.writes if 200 <= w.status < 300)
    failed = Counter(w.status for w in tally.writes if not 200 <= w.status < 300)
    bytes_ = byte_totals(soak.nodes)
    lan_out = bytes_.get('{carrier="lan",direction="out"}', 0)
    lan_in = bytes_.get('{carrier="lan",direction="in"}', 0)
    hub_nodes = result["hub"].get("nodes", {})
    hub_refusals = result["hub"].get("refusals", {})
    hub_in = sum(n["bytes_in"] for n in hub_nodes.values())
    hub_out = sum(n["bytes_out"] for n in hub_nodes.values())
    refusals = Counter()
    for node in soak.nodes:
        for key, value in node.counters().items():
            if key.startswith("simpul_sync_refusals_total"):
                refusals[key.removeprefix("simpul_sync_refusals_total")] += value
    traced = {name: n for name, n in result["tracebacks"].items() if n}
    converged = (
        f"{result['converge_s']:.1f} s after healing began"
        if result["converge_s"] is not None
        else f"not within the bound: {result['differences']} record differences"
    )
    verify_ok = all(v.startswith("ok") for v in result["verified"].values())
    lines = [
        SECTION,
        "",
        f"Command: `python bench/soak.py --minutes {args.minutes} --offices {args.offices}"
        f" --households {args.households} --seed {args.seed}`. Measured"
        f" {info['date']} on {info['cpus']} CPUs ({info['model']}), {info['memory']} RAM,"
        f" {info['os']}, Python {info['python']}; load average (1 min) at the end"
        f" {os.getloadavg()[0]:.2f} (the machine was shared).",
        "",
        f"{args.offices} office nodes on one bridge (namespaces, discovery on), `simpul hub`"
        " upstream reachable from office0 and office1, a village node reached only by a USB"
        f" folder carried to and from office{args.offices - 1}. {args.households:,} households"
        f" of region {SCOPE} imported into office0; {result['records']:,} records at the end.",
        "",
        "| phase | seconds |",
        "| --- | ---: |",
        *(f"| {name} | {seconds:.1f} |" for name, seconds in tally.phases.items()),
        "",
        "| count | value |",
        "| --- | ---: |",
        f"| writes attempted (edits / creates) | {attempted['edit']} / {attempted['create']} |",
        f"| writes acknowledged 2xx (edits / creates) | {acked['edit']} / {acked['create']} |",
        f"| writes not acknowledged, by status (0: no answer) |"
        f" {', '.join(f'{k}: {v}' for k, v in sorted(failed.items())) or '0'} |",
        f"| bursts: one field of one household edited at once on 2-3 nodes | {tally.bursts} |",
        f"| kill -9 (of them the uplink node) | {len(tally.kills)} ({tally.uplink_kills}) |",
        f"| link flaps eth0 / wan0 | {tally.flaps} / {tally.wan_flaps} |",
        f"| courier rounds (usb sync killed: while a drive file was written / other) |"
        f" {tally.courier_rounds} ({tally.usb_interrupted['killed mid-write']}"
        f" / {tally.usb_interrupted['killed']}) |",
        f"| records with a conflict shown in `_meta.conflicts` | {writes['conflicts_shown']} |",
        f"| bytes, LAN sync (sum over nodes, out / in) | {lan_out:,} / {lan_in:,} |",
        f"| bytes, hub (at the hub: in / out) | {hub_in:,} / {hub_out:,} |",
        f"| bytes, USB folder carried (both ways, every round) | {tally.usb_bytes:,} |",
        f"| refusals counted by nodes (reason: runs) |"
        f" {', '.join(f'{k}: {v}' for k, v in sorted(refusals.items())) or '0'} |",
        f"| refusals counted by the hub (reason: entries or runs) |"
        f" {', '.join(f'{k}: {v}' for k, v in sorted(hub_refusals.items())) or '0'} |",
        "",
        "| acceptance | result | holds |",
        "| --- | --- | --- |",
        f"| every node and the hub converge (same records, same heads) | {converged} |"
        f" {verdict(result['converge_s'] is not None)} |",
        f"| 0 acknowledged writes lost | {len(writes['lost'])} of {writes['acked']} lost |"
        f" {verdict(not writes['lost'])} |",
        f"| conflicts visible in `_meta.conflicts`, API heads = store heads |"
        f" {len(writes['api_mismatch'])} mismatches over {writes['records_written']} records |"
        f" {verdict(not writes['api_mismatch'])} |",
        f"| `simpul verify` clean on every data dir and the hub |"
        f" {'; '.join(f'{k}: {v}' for k, v in result['verified'].items())} |"
        f" {verdict(verify_ok)} |",
        f"| no `Traceback` in any log |"
        f" {', '.join(f'{k}: {v}' for k, v in traced.items()) or 'none'} | {verdict(not traced)} |",
        f"| every node killed started again |"
        f" {'; '.join(tally.start_failures) or 'yes'} | {verdict(not tally.start_failures)} |",
        f"| `simpul usb sync` never failed (other than killed) |"
        f" {'; '.join(tally.usb_failures) or 'none'} | {verdict(not tally.usb_failures)} |",
        "",
    ]
    if writes["lost"] or writes["api_mismatch"]:
        lines += ["Lost or mismatched (first 10):", ""]
        lines += [f"- {item}" for item in (writes["lost"] + writes["api_mismatch"])[:10]] + [""]
    if result["errors"]:
        lines += ["ERROR lines and tracebacks in the logs (numbers and ids blanked):", ""]
        lines += [f"- {n} x `{line}`" for line, n in result["errors"].most_common(15)] + [""]
    return "\n".join(lines)


def passed(result: dict[str, Any], soak: Soak) -> bool:
    writes = result["writes"]
    return result["converge_s"] is not None and not (
        writes["lost"] or writes["api_mismatch"] or soak.tally.usb_failures
        or soak.tally.start_failures
        or any(result["tracebacks"].values())
        or not all(v.startswith("ok") for v in result["verified"].values())
    )  # fmt: skip


async def main_async(args: argparse.Namespace, work: Path) -> int:
    soak = Soak(args, work)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        result = await soak.run()
    except (SoakError, TimeoutError, asyncio.CancelledError) as exc:
        why = "stopped by a signal" if isinstance(exc, asyncio.CancelledError) else str(exc)
        say(f"soak failed: {why or 'the time bound was hit'}")
        for line in soak.tally.events[-20:]:
            print(line, file=sys.stderr)
        return 1
    finally:
        await soak.close()
    info = machine()
    publish(report(soak, result, info, args), info, SECTION, args.no_docs)
    (work / "events.txt").write_text("\n".join(soak.tally.events) + "\n")
    return 0 if passed(result, soak) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--minutes", type=float, default=15, help="bound of the whole run")
    parser.add_argument("--offices", type=int, default=5, help="office nodes (3..20)")
    parser.add_argument("--households", type=int, default=2000, help="imported into office0")
    parser.add_argument("--chaos-seconds", type=float, default=None,
                        help="chaos phase (default 40%% of --minutes)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data)")
    args = parser.parse_args(argv)
    if args.agent:
        return agent_main()
    if not 3 <= args.offices <= 20 or args.households < HOT_RECORDS or args.minutes < 3:
        parser.error("--offices 3..20, --households >= 40, --minutes >= 3")
    if args.chaos_seconds is None:
        args.chaos_seconds = args.minutes * 60 * 0.4
    work = Path(tempfile.mkdtemp(prefix="simpul-soak-"))
    say(f"work dir {work}")
    try:
        return asyncio.run(main_async(args, work))
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
