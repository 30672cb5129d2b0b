"""`simpul hub …`: run the district hub, trust a network's root, import at the hub, status.

A hub joins each network like a device does, once per network: `simpul enroll request
--out FILE` on the hub (its data dir), `simpul network admit FILE --role hub --scope CODE
--out GRANT` on the admin's device, then `simpul hub trust ROOT_CERT --grant GRANT` here.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from simpul.crypto.enrollment import Grant
from simpul.node import hub_networks
from simpul.node.cli_network import node_key
from simpul.node.cli_support import echo_rejections, guarded, parse_listen, run
from simpul.node.importer import import_csv
from simpul.node.runtime import open_node

DEFAULT_HUB_LISTEN = "0.0.0.0:8443"
DEFAULT_STATUS_LISTEN = "127.0.0.1:8472"  # 8471 is a node's LAN sync port
STATUS_TIMEOUT = 10


@click.group(invoke_without_command=True)
@click.option(
    "--listen",
    default=DEFAULT_HUB_LISTEN,
    show_default=True,
    help="HOST:PORT for node sessions (mutual TLS).",
)
@click.option(
    "--status-listen",
    default=DEFAULT_STATUS_LISTEN,
    show_default=True,
    help="HOST:PORT for GET /api/v1/status and /metrics (loopback clients only).",
)
@click.pass_context
def hub(ctx: click.Context, listen: str, status_listen: str) -> None:
    """Run the district hub (without a subcommand) or manage it."""
    if ctx.invoked_subcommand is not None:
        return
    data_dir: Path = ctx.obj

    def ready(port: int, status_port: int) -> None:
        host = parse_listen(listen)[0]
        click.echo(f"Simpul hub listening on {host}:{port} (status on port {status_port})")
        sys.stdout.flush()

    from simpul.node.hub import serve_hub  # the web stack, loaded only by the command that serves

    run(serve_hub(data_dir, parse_listen(listen), parse_listen(status_listen), ready))


@hub.command("trust")
@click.argument("root_cert", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--grant",
    "grant_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The grant the network's admin made for this hub ('network admit --role hub').",
)
@click.pass_obj
def hub_trust(data_dir: Path, root_cert: Path, grant_file: Path) -> None:
    """Serve the network whose root certificate is ROOT_CERT (restart the hub after)."""
    key = node_key(data_dir)
    grant = guarded(Grant.from_bytes, grant_file.read_bytes())
    joined = guarded(hub_networks.trust, data_dir, key, root_cert.read_bytes(), grant)
    click.echo(
        f"hub trusts network {joined.network_id} (scope {', '.join(joined.certificate.scope)})"
    )


@hub.command("import")
@click.option("--network", "network_id", required=True, help="The network's id.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def hub_import(data_dir: Path, network_id: str, file: Path) -> None:
    """Import households made at the district into one network's records (signed by the hub)."""
    folder = hub_networks.network_folder(data_dir, network_id)
    if network_id not in guarded(hub_networks.trusted_networks, data_dir):
        raise click.ClickException(f"this hub does not serve network {network_id!r}")
    key = node_key(data_dir)

    async def go() -> dict[str, Any]:
        async with open_node(folder, key) as opened:
            return await import_csv(opened.records, file, "hub", False)

    summary = run(go())
    click.echo(
        f"{summary['households']} households imported into network {network_id}: "
        f"{summary['created']} new, {summary['updated']} updated; "
        f"{len(summary['rejected'])} rows rejected"
    )
    echo_rejections(summary["rejected"])


@hub.command("status")
@click.option("--url", default=f"http://{DEFAULT_STATUS_LISTEN}", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def hub_status(url: str, as_json: bool) -> None:
    """Show the running hub's networks, nodes and refusals."""
    try:
        with urllib.request.urlopen(url + "/api/v1/status", timeout=STATUS_TIMEOUT) as answer:
            facts = json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read the hub's status at {url}: {exc}") from None
    if as_json:
        click.echo(json.dumps(facts))
        return
    click.echo(f"hub {facts['node_id']}")
    for network in facts["networks"]:
        click.echo(
            f"network {network['network_id']}: {network['records']} records, "
            f"{network['entries']} entries, {network['origins']} feeds"
        )
        for node, counts in network["nodes"].items():
            click.echo(
                f"  node {node}: {counts['sessions']} sessions, in {counts['entries_in']} "
                f"entries ({counts['bytes_in']} B), out {counts['entries_out']} entries"
            )
        for reason, count in sorted(network["refusals"].items()):
            click.echo(f"  refused {reason}: {count}")
    click.echo(f"refused, unknown network: {facts['refused_unknown_network']}")
