"""`simpul peer add HOST:PORT` and `simpul peers`: the nodes this node knows on the LAN.

Peers on the same LAN find each other by themselves (mDNS); an address added by hand is
for WiFi that isolates its clients, where announcements never arrive.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from simpul.node.cli_support import run
from simpul.node.peers import Peer, PeerTable, with_refusals
from simpul.node.runtime import open_node
from simpul.sync.refusals import refused_per_origin


def parse_peer_address(value: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) with a host and a port from 1 to 65535."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"expected HOST:PORT, e.g. 192.168.1.20:8471, got {value!r}")
    return host, int(port)


def when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def reasons_text(reasons: dict[str, int]) -> str:
    """{'scope': 22, 'chain': 1} -> 'scope 22, chain 1'."""
    return ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items()))


def peer_summary(peer: dict[str, Any]) -> str:
    """One line for a peer as `status_of` shows it: state, last sync, counts, and what
    either side refuses or the last error."""
    line = (
        f"{peer['node_id'] or '?':32}  {peer['name'] or '-':16}  {peer['address']:21}  "
        f"{peer['source']:6}  {peer['state']:10}  seen {when(peer['last_seen_ms'])}  "
        f"synced {when(peer['last_sync_ms'])}  sent {peer['entries_sent']} "
        f"received {peer['entries_received']}"
    )
    if peer["refused"]:
        line += f"  we refuse: {reasons_text(peer['refused'])}"
    if peer["refused_by_peer"]:
        line += f"  it refuses: {reasons_text(peer['refused_by_peer'])}"
    if peer["last_error"]:
        line += f"  error: {peer['last_error']}"
    return line


@click.group()
def peer() -> None:
    """Add peers by address (for WiFi where nodes cannot see each other)."""


@peer.command("add")
@click.argument("address")
@click.pass_obj
def peer_add(data_dir: Path, address: str) -> None:
    """Sync with the node at ADDRESS (HOST:PORT, its sync port) from now on."""
    host, port = parse_peer_address(address)

    async def add() -> Peer:
        async with open_node(data_dir) as opened:
            return await PeerTable(opened.db).add_manual(host, port)

    click.echo(f"peer {run(add()).address} added")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def peers(data_dir: Path, as_json: bool) -> None:
    """List the peers found on the LAN or added by hand ("?": not contacted yet)."""

    async def go() -> list[dict[str, Any]]:
        async with open_node(data_dir) as opened:
            refused = await refused_per_origin(opened.db)
            return [
                with_refusals(p.to_json(), refused) for p in await PeerTable(opened.db).list_all()
            ]

    found = run(go())
    if as_json:
        click.echo(json.dumps(found))
        return
    if not found:
        click.echo("no peers yet")
    for p in found:
        click.echo(peer_summary(p))
