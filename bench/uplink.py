"""Benchmark the uplink (issue 6): an office node uploading to an empty hub over loopback.

Targets: upload of 50,000 households to an empty hub <= 15 s; bytes on the wire for a
one-field edit of one household <= 1 KiB above a no-op round; a no-op round between an
up-to-date office and hub <= 4 KiB (issue 6). Issue 17: on a kept or resumed connection a
no-op round <= 1 KiB and a one-field edit round <= 2 KiB, whole; the first connection's
cost reported beside them.

Setup: node A (`simpul network create`, households imported with `simpul import`), and for
each run a fresh, empty `simpul hub` process (admitted with `network admit --role hub`,
`hub trust`) on 127.0.0.1. The upload is one uplink round (`node/uplink_session.py`,
`hub_round`) run in this process on A's store, exactly as the running node's uplink does;
it is timed from the round's start until the hub acknowledged the last piece. Bytes are
counted at the socket (TLS records, both directions) by the uplink's own `Meter`. The
rounds run on one `HubLink`, as the node's uplink does: after each upload, on the kept
connection, a no-op round (both up to date), then one field of one household edited on A
and a round that sends it; then the link is closed and the same two on a new connection
that resumes the TLS session; last, a no-op round on a fresh TLS context (nothing to
resume: the first connection's cost).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from import_search import (
    fmt_list,
    run_benchmark,
    run_checked,
    simpul_command,
    verdict,
)

from simpul.crypto.tls import client_context
from simpul.node.hub_networks import server_name
from simpul.node.membership import load_membership
from simpul.node.runtime import open_node
from simpul.node.sync_session import Dial, Trust
from simpul.node.trust_policy import network_engine
from simpul.node.uplink_session import PIECE_BYTES, HubLink, Meter, hub_round
from sync import PASSPHRASE, SCOPES, setup

SECTION = "## Uplink to the hub (issue 6)"
UPLOAD_TARGET_S = 15.0
EDIT_TARGET_B = 1024
NOOP_TARGET_B = 4096
KEPT_NOOP_TARGET_B = 1024
KEPT_EDIT_TARGET_B = 2048


@dataclass
class Results:
    households: int = 0
    import_s: float = 0.0
    upload_s: list[float] = field(default_factory=list)
    upload_bytes: list[int] = field(default_factory=list)
    pieces: list[int] = field(default_factory=list)
    noop_bytes: list[int] = field(default_factory=list)  # a new connection (first one)
    edit_bytes: list[int] = field(default_factory=list)
    kept_noop: list[int] = field(default_factory=list)
    kept_edit: list[int] = field(default_factory=list)
    resumed_noop: list[int] = field(default_factory=list)
    resumed_edit: list[int] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)


def start_hub(a_dir: Path, hub_dir: Path, work: Path) -> tuple[subprocess.Popen, int]:
    """A fresh hub that trusts A's network, running on a free loopback port."""
    cmd = simpul_command()
    request, grant = work / f"{hub_dir.name}.req", work / f"{hub_dir.name}.grant"
    scopes = [arg for scope in SCOPES for arg in ("--scope", scope)]
    run_checked([*cmd, "--data-dir", str(hub_dir), "enroll", "request", "--out", str(request)])
    run_checked([*cmd, "--data-dir", str(a_dir), "network", "admit", str(request), "--role",
                 "hub", *scopes, "--out", str(grant), "--passphrase-stdin"],
                stdin=PASSPHRASE)  # fmt: skip
    root = a_dir / "network" / "root.cert.pem"
    run_checked([*cmd, "--data-dir", str(hub_dir), "hub", "trust", str(root),
                 "--grant", str(grant)])  # fmt: skip
    hub = subprocess.Popen(
        [*cmd, "--data-dir", str(hub_dir), "--log-level", "warning", "hub", "--listen",
         "127.0.0.1:0", "--status-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert hub.stdout is not None
    found = re.search(r"listening on \S+:(\d+)", hub.stdout.readline())
    if not found:
        hub.kill()
        sys.exit("the hub did not start")
    return hub, int(found.group(1))


async def rounds(a_dir: Path, port: int, res: Results) -> None:
    """Upload everything, then no-op and one-field edit rounds on a kept, a resumed and a
    new connection, on A's store."""
    membership = load_membership(a_dir)
    assert membership is not None
    async with open_node(a_dir) as node:
        engine, _ = network_engine(node, membership)

        def make_dial() -> Dial:
            context = client_context(
                node.key, membership.certificate.pem, membership.root_cert,
                membership.revocations, private_dir=None,
            )  # fmt: skip
            return Dial(
                f"https://127.0.0.1:{port}",
                context,
                Trust(membership.root_cert, membership.revocations),
                server_hostname=server_name(membership.network_id),
            )

        async def round_bytes(link: HubLink, connection: str, sent: int = 0) -> int:
            before = link.meter.total
            done = await hub_round(engine, link.dial, link.meter, link=link)
            assert done.connection == connection, (done.connection, connection)
            assert done.report.sent == sent, done.report
            return link.meter.total - before

        async def edit() -> None:
            row = await node.db.fetchone("SELECT id FROM records ORDER BY id LIMIT 1")
            assert row is not None
            current = await node.records.get(row[0])
            assert current is not None
            desil = 1 if current.get("desil") != 1 else 2
            await node.records.update(row[0], lambda h: {**h, "desil": desil}, "bench")

        async with HubLink(make_dial(), Meter()) as link:
            start = time.perf_counter()
            done = await hub_round(engine, link.dial, link.meter, link=link)
            res.upload_s.append(time.perf_counter() - start)
            assert done.hub_frontier == await engine.frontier(), "the upload is incomplete"
            res.upload_bytes.append(link.meter.total)
            res.pieces.append(done.pieces)
            res.kept_noop.append(await round_bytes(link, "kept"))
            await edit()
            res.kept_edit.append(await round_bytes(link, "kept", 1))
            await link.close()
            res.resumed_noop.append(await round_bytes(link, "resumed"))
            await edit()
            await link.close()
            res.resumed_edit.append(await round_bytes(link, "resumed", 1))
        async with HubLink(make_dial(), Meter()) as fresh:
            res.noop_bytes.append(await round_bytes(fresh, "new"))
            await edit()
        async with HubLink(make_dial(), Meter()) as fresh:
            res.edit_bytes.append(await round_bytes(fresh, "new", 1))


def bench(args: argparse.Namespace, csv_path: Path, work: Path) -> Results:
    res = Results()
    a_dir = work / "a"
    summary, res.import_s = setup(a_dir, work / "b", work, csv_path)
    res.households = summary["households"]
    for run in range(args.runs):
        hub, port = start_hub(a_dir, work / f"hub{run}", work)
        try:
            res.loads.append(os.getloadavg()[0])
            asyncio.run(rounds(a_dir, port, res))
        finally:
            hub.terminate()
            hub.wait(timeout=30)
    return res


def report(res: Results, args: argparse.Namespace, info: dict[str, str]) -> str:
    up_s, up_mb = res.upload_s, [b / 1e6 for b in res.upload_bytes]
    noop = statistics.median(res.noop_bytes)
    edit_above = statistics.median(res.edit_bytes) - noop
    kept_noop, kept_edit = statistics.median(res.kept_noop), statistics.median(res.kept_edit)
    resumed_noop = statistics.median(res.resumed_noop)
    resumed_edit = statistics.median(res.resumed_edit)
    rows = [
        f"| upload everything to an empty hub | time (s) | {statistics.median(up_s):.2f} "
        f"| {fmt_list(up_s, 2)} | ≤ {UPLOAD_TARGET_S:g} s "
        f"| {verdict(statistics.median(up_s) <= UPLOAD_TARGET_S)} |",
        f"| | bytes at the socket (MB) | {statistics.median(up_mb):.2f} | {fmt_list(up_mb, 2)} "
        "| | |",
        f"| one-field edit of one household, whole round, new connection | bytes | "
        f"{statistics.median(res.edit_bytes):,.0f} | {fmt_list(res.edit_bytes, 0)} | | |",
        f"| one-field edit, above a no-op round | bytes | {edit_above:,.0f} | | "
        f"≤ {EDIT_TARGET_B:,} B | {verdict(edit_above <= EDIT_TARGET_B)} |",
        f"| no-op round, office and hub up to date, new connection | bytes | "
        f"{noop:,.0f} | {fmt_list(res.noop_bytes, 0)} "
        f"| ≤ {NOOP_TARGET_B:,} B | {verdict(noop <= NOOP_TARGET_B)} |",
        f"| no-op round on the kept connection | bytes | {kept_noop:,.0f} "
        f"| {fmt_list(res.kept_noop, 0)} | ≤ {KEPT_NOOP_TARGET_B:,} B "
        f"| {verdict(kept_noop <= KEPT_NOOP_TARGET_B)} |",
        f"| one-field edit round on the kept connection | bytes | {kept_edit:,.0f} "
        f"| {fmt_list(res.kept_edit, 0)} | ≤ {KEPT_EDIT_TARGET_B:,} B "
        f"| {verdict(kept_edit <= KEPT_EDIT_TARGET_B)} |",
        f"| no-op round on a resumed TLS session | bytes | {resumed_noop:,.0f} "
        f"| {fmt_list(res.resumed_noop, 0)} | ≤ {KEPT_NOOP_TARGET_B:,} B "
        f"| {verdict(resumed_noop <= KEPT_NOOP_TARGET_B)} |",
        f"| one-field edit round on a resumed TLS session | bytes | {resumed_edit:,.0f} "
        f"| {fmt_list(res.resumed_edit, 0)} | ≤ {KEPT_EDIT_TARGET_B:,} B "
        f"| {verdict(resumed_edit <= KEPT_EDIT_TARGET_B)} |",
    ]
    return "\n".join(
        [
            SECTION,
            "",
            f"Command: `python bench/uplink.py --count {args.count} --runs {args.runs}`. "
            f"Measured {info['date']} on {info['cpus']} CPUs ({info['model']}), "
            f"{info['memory']} RAM, {info['os']}, Python {info['python']}. Load average "
            f"(1 min) before each run: {fmt_list(res.loads, 2)} (times above a load of 2 "
            "are the shared machine's, not the code's; bytes do not depend on it).",
            "",
            f"Setup: {res.households:,} households imported into node A ({res.import_s:.0f} s); "
            "each run starts a fresh, empty `simpul hub` process on loopback and runs the "
            "uplink's round (`hub_round`) on A's store in the benchmark process: pull, then "
            f"pushes of about {PIECE_BYTES // 1024} KiB of whole chunks "
            f"({statistics.median(res.pieces):.0f} "
            "pieces), each acknowledged with the hub's frontier. Bytes are counted at the "
            "socket (TLS included, both directions). The rounds run on one `HubLink` as the "
            "node's uplink does: a round on the kept connection pays no handshake; after "
            "the link is closed the next round resumes the TLS 1.3 session (no certificates; "
            "a stateful ticket, decision 0025); the first rows are rounds on a "
            "fresh TLS context (a new connection with both certificates: what the first "
            "round after a start, or after the hub restarted, costs).",
            "",
            "| workload | measure | median | all runs | target | holds |",
            "| --- | --- | ---: | --- | --- | --- |",
            *rows,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(
        __doc__.splitlines()[0], SECTION, "uploads to a fresh hub", bench, report, argv
    )


if __name__ == "__main__":
    sys.exit(main())
