"""The `simpul` command line: run a node, manage operators and tokens, import, export, status.

Every failure is one clear line on stderr and a non-zero exit code, never a traceback
(run with `--log-level debug` to see one in the log).
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from simpul.crypto.node_key import verify_signature
from simpul.node import uplink_state
from simpul.node.cli_appliance import backup, doctor, restore
from simpul.node.cli_hub import hub
from simpul.node.cli_network import enroll, network
from simpul.node.cli_peers import peer, peer_summary, peers, reasons_text, when
from simpul.node.cli_support import echo_rejections, parse_listen, read_secret, run
from simpul.node.cli_usb import usb
from simpul.node.importer import import_csv
from simpul.node.node_status import status_of
from simpul.node.runtime import default_data_dir, open_node, prepare_data_dir
from simpul.sync import regions
from simpul.sync.export_households import CSV_COLUMNS, HouseholdWorkbook, csv_rows, jsonl_line
from simpul.sync.household import STATUS_USULAN
from simpul.sync.operators import ROLES, Account, TokenInfo

DEFAULT_LISTEN = "127.0.0.1:8470"


GLOBAL_OPTIONS = ("--data-dir", "--log-level")


class GlobalOptionsAnywhere(click.Group):
    """`--data-dir` and `--log-level` belong to `simpul` itself, but operators type them
    after the subcommand too (`simpul node --data-dir D`): move them to the front."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        front: list[str] = []
        rest: list[str] = []
        index = 0
        while index < len(args):
            arg = args[index]
            if arg == "--":
                rest.extend(args[index:])
                break
            name = arg.split("=", 1)[0]
            if name in GLOBAL_OPTIONS and rest:
                takes_next = "=" not in arg and index + 1 < len(args)
                front.extend(args[index : index + 1 + takes_next])
                index += 1 + takes_next
                continue
            rest.append(arg)
            index += 1
        return super().parse_args(ctx, front + rest)


@click.group(cls=GlobalOptionsAnywhere, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where this node keeps its key and database (default: $SIMPUL_DATA_DIR or "
    "~/.local/share/simpul).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Default: info for 'node', warning for other commands.",
)
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None, log_level: str | None) -> None:
    """Simpul: peer-to-peer sync of household welfare records."""
    level = log_level or ("info" if ctx.invoked_subcommand in ("node", "hub") else "warning")
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    ctx.obj = data_dir or default_data_dir()


main.add_command(network)
main.add_command(enroll)
main.add_command(peer)
main.add_command(peers)
main.add_command(usb)
main.add_command(backup)
main.add_command(restore)
main.add_command(doctor)
main.add_command(hub)


@main.command()
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, help="HOST:PORT to serve.")
@click.option(
    "--sync-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Mutual-TLS port for sync with other nodes, on every interface "
    "(default: the HTTP port + 1; 0: any free port).",
)
@click.option(
    "--sync-period",
    type=click.FloatRange(1, 3600),
    default=None,
    help="Seconds between sync rounds with every peer (default 30).",
)
@click.option(
    "--usb-root",
    "usb_roots",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Another folder where USB drives are mounted (besides /media, /run/media, /mnt).",
)
@click.option(
    "--hub",
    "hub_url",
    default=None,
    help="The district hub, https://HOST:PORT (kept in the data dir for later starts).",
)
@click.option(
    "--uplink-budget",
    default=None,
    help="Bytes the uplink may spend, DAY[/MONTH], e.g. 20M/300M (kept like --hub).",
)
@click.option(
    "--hub-period",
    type=click.FloatRange(1, 86400),
    default=None,
    help="Seconds between rounds with the hub when nothing is waiting to go up (default 300).",
)
@click.option(
    "--uplink-lease",
    type=click.FloatRange(*uplink_state.LEASE_RANGE),
    default=None,
    help="Seconds the office waits for a silent uplink node before another takes over "
    "(default 30; kept like --hub).",
)
@click.option(
    "--hub-full-photos/--hub-thumbnails-only",
    "hub_full_photos",
    default=None,
    help="Send house photos to the hub at full size, or thumbnails only (the default; "
    "kept like --hub). Both count against --uplink-budget.",
)
@click.pass_obj
def node(
    data_dir: Path,
    listen: str,
    sync_port: int | None,
    sync_period: float | None,
    usb_roots: tuple[Path, ...],
    hub_url: str | None,
    uplink_budget: str | None,
    hub_period: float | None,
    uplink_lease: float | None,
    hub_full_photos: bool | None,
) -> None:
    """Run this node (web UI and JSON API) until stopped."""
    host, port = parse_listen(listen)
    prepare_data_dir(data_dir)
    try:
        uplink = uplink_state.configure(
            data_dir, hub_url, uplink_budget, uplink_lease, hub_full_photos
        )
    except uplink_state.UplinkConfigError as exc:
        raise click.ClickException(str(exc)) from None

    def ready(url: str, lan_port: int | None) -> None:
        sync = f" (LAN sync on port {lan_port})" if lan_port else " (LAN sync off: no network)"
        click.echo(f"Simpul node running at {url}{sync}", nl=True)
        sys.stdout.flush()

    from simpul.node.server import serve  # the web stack, loaded only by the command that serves

    usb = list(usb_roots)
    run(serve(data_dir, host, port, ready, sync_port, sync_period, usb, uplink, hub_period))


@main.group()
def operator() -> None:
    """Manage the people who log in to this node."""


@operator.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.pass_obj
def operator_add(data_dir: Path, name: str, role: str, password_stdin: bool) -> None:
    """Add operator NAME with a role and a password."""
    password = read_secret(f"Password for {name}", password_stdin, confirm=True)

    async def add() -> None:
        async with open_node(data_dir) as opened:
            await opened.operators.add(name, role, password)

    run(add())
    click.echo(f"operator {name} added with role {role}")


@operator.command("list")
@click.pass_obj
def operator_list(data_dir: Path) -> None:
    """List operators: name, role, disabled or not, API tokens."""

    async def go() -> list[Account]:
        async with open_node(data_dir) as opened:
            return await opened.operators.accounts()

    for account in run(go()):
        state = f"disabled since {when(account.disabled_ms)}" if account.disabled_ms else "active"
        click.echo(f"{account.username}\t{account.role}\t{state}\ttokens: {account.tokens}")


@operator.command("disable")
@click.argument("name")
@click.pass_obj
def operator_disable(data_dir: Path, name: str) -> None:
    """Stop NAME logging in or using API tokens (the account and its audit trail stay)."""
    _set_disabled(data_dir, name, True)
    click.echo(f"operator {name} disabled")


@operator.command("enable")
@click.argument("name")
@click.pass_obj
def operator_enable(data_dir: Path, name: str) -> None:
    """Let a disabled operator NAME log in again."""
    _set_disabled(data_dir, name, False)
    click.echo(f"operator {name} enabled")


def _set_disabled(data_dir: Path, name: str, disabled: bool) -> None:
    async def go() -> None:
        async with open_node(data_dir) as opened:
            await opened.operators.set_disabled(name, disabled)

    run(go())


@operator.command("reset-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.pass_obj
def operator_reset_password(data_dir: Path, name: str, password_stdin: bool) -> None:
    """Give operator NAME a new password (their open page sessions end)."""
    password = read_secret(f"New password for {name}", password_stdin, confirm=True)

    async def go() -> None:
        async with open_node(data_dir) as opened:
            await opened.operators.reset_password(name, password)

    run(go())
    click.echo(f"password of operator {name} reset")


@main.group()
def token() -> None:
    """API tokens for scripts and integrations."""


@token.command("list")
@click.pass_obj
def token_list(data_dir: Path) -> None:
    """List API tokens: id (to withdraw it), operator, created. Never the token itself."""

    async def go() -> list[TokenInfo]:
        async with open_node(data_dir) as opened:
            return await opened.operators.tokens()

    for info in run(go()):
        click.echo(f"{info.id}\t{info.username}\tcreated {when(info.created_ms)}")


@token.command("withdraw")
@click.argument("token_id")
@click.pass_obj
def token_withdraw(data_dir: Path, token_id: str) -> None:
    """Withdraw the API token TOKEN_ID (as 'simpul token list' shows it)."""

    async def go() -> TokenInfo:
        async with open_node(data_dir) as opened:
            return await opened.operators.withdraw_token(token_id)

    info = run(go())
    click.echo(f"token {info.id} of {info.username} withdrawn")


@token.command("create")
@click.argument("name")
@click.pass_obj
def token_create(data_dir: Path, name: str) -> None:
    """Print a new API token for operator NAME."""

    async def create() -> str:
        async with open_node(data_dir) as opened:
            return await opened.operators.create_token(name)

    click.echo(run(create()))


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--operator",
    "operator_name",
    default="import",
    show_default=True,
    help="Username recorded in the audit trail.",
)
@click.option(
    "--allow-duplicates",
    is_flag=True,
    help="Import rows whose NIK or No. KK another household holds (then listed on Duplikat).",
)
@click.pass_obj
def import_(
    data_dir: Path, file: Path, as_json: bool, operator_name: str, allow_duplicates: bool
) -> None:
    """Import households from an office CSV or Excel .xlsx file (one row per person)."""
    show_progress = not as_json and sys.stderr.isatty()

    async def go() -> dict[str, Any]:
        async with open_node(data_dir) as opened:
            return await import_csv(
                opened.records, file, operator_name, show_progress, not allow_duplicates
            )

    summary = run(go())
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False))
        return
    click.echo(
        f"{summary['households']} households ({summary['persons']} persons) imported: "
        f"{summary['created']} new, {summary['updated']} updated, "
        f"{summary['unchanged']} unchanged; {len(summary['rejected'])} rows rejected"
    )
    echo_rejections(summary["rejected"], " (use --json)")


@main.command()
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "xlsx"]), default="jsonl")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--village", default=None, help="Only households of this village code.")
@click.option(
    "--status",
    "status_usulan",
    type=click.Choice(STATUS_USULAN),
    default=None,
    help="Only households whose proposal has this status (e.g. the musdes list).",
)
@click.pass_obj
def export(
    data_dir: Path, fmt: str, out: Path | None, village: str | None, status_usulan: str | None
) -> None:
    """Export live households as JSON lines, CSV or an Excel workbook (xlsx needs --out)."""
    if fmt == "xlsx" and out is None:
        raise click.UsageError("--format xlsx writes a file: give --out FILE.xlsx")

    def wanted(record: dict[str, Any]) -> bool:
        return (village is None or record["kode_wilayah"] == village) and (
            status_usulan is None or record["status_usulan"] == status_usulan
        )

    async def go() -> int:
        count = 0
        async with open_node(data_dir) as opened:
            if fmt == "xlsx":
                book = HouseholdWorkbook(await regions.all_names(opened.db))
                async for record in opened.records.iter_all():
                    if wanted(record):
                        book.add(record)
                assert out is not None
                book.save(str(out))
                return book.households
            stream = out.open("w", encoding="utf-8", newline="") if out else sys.stdout
            try:
                writer = csv.writer(stream, lineterminator="\n")
                if fmt == "csv":
                    writer.writerow(CSV_COLUMNS)
                async for record in opened.records.iter_all():
                    if not wanted(record):
                        continue
                    if fmt == "csv":
                        writer.writerows(csv_rows(record))
                    else:
                        stream.write(jsonl_line(record))
                    count += 1
            finally:
                if out:
                    stream.close()
        return count

    count = run(go())
    if out:
        click.echo(f"{count} households written to {out}", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def status(data_dir: Path, as_json: bool) -> None:
    """Show this node's id, network, record count and feed length."""

    async def go() -> dict[str, Any]:
        async with open_node(data_dir) as opened:
            return await status_of(opened)

    facts = run(go())
    if as_json:
        click.echo(json.dumps(facts))
        return
    peers = facts.pop("peers", [])
    frontier = facts.pop("frontier", {})
    usb_facts = facts.pop("usb", None) or {}
    uplink = facts.pop("uplink", None)
    refused = facts.pop("refused", {})
    for key, value in facts.items():
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        click.echo(f"{key.replace('_', ' ')}: {value if value is not None else '-'}")
    click.echo(f"feeds held: {len(frontier)}")
    for origin, seq in frontier.items():
        click.echo(f"  {origin}  up to {seq}")
    for origin, reasons in refused.items():
        click.echo(f"REFUSED: entries of {origin}: {reasons_text(reasons)} (kept, not applied)")
    click.echo(f"peers: {len(peers)}")
    for known in peers:
        click.echo(f"  {peer_summary(known)}")
    if usb_facts:
        line = usb_facts.get("message") or usb_facts.get("progress") or usb_facts.get("state")
        click.echo(f"usb: {usb_facts.get('drive')}: {line}")
    show_uplink(uplink)


def show_uplink(uplink: dict[str, Any] | None) -> None:
    if uplink is None:
        click.echo("hub: none configured (simpul node --hub https://HOST:PORT)")
        return
    reached = uplink["last_reached_ms"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(reached / 1000)) if reached else "-"
    budget = f"{uplink['budget_day'] or '-'} / {uplink['budget_month'] or '-'}"
    reachable = {True: "yes", False: "no", None: "not checked"}[uplink["reachable"]]
    click.echo(f"hub: {uplink['hub']}  reachable: {reachable}  last reached: {when}")
    click.echo(f"  uplink node: {uplink['uplink_node'] or '-'}  state: {uplink['state']}")
    click.echo(
        f"  bytes today: {uplink['bytes_today']}  this month: {uplink['bytes_this_month']}"
        f"  budget (day / month): {budget}"
    )
    click.echo(f"  still to send: {uplink['still_to_send']} entries")
    if uplink["last_error"]:
        click.echo(f"  last error: {uplink['last_error']}")


@main.command()
@click.pass_obj
def verify(data_dir: Path) -> None:
    """Verify every feed (hash chains and checkpoint signatures) and every photo file
    (against its SHA-256; a damaged one is set aside and fetched again from a peer)."""

    async def go() -> tuple[dict[str, int], int, list[str]]:
        async with open_node(data_dir) as opened:
            feeds = await opened.records.verify_feeds(verify_signature)
            return feeds, *await opened.photos.verify()

    feeds, photos, damaged = run(go())
    for origin, seq in feeds.items():
        click.echo(f"feed {origin}: {seq} entries verified")
    click.echo(f"photos: {photos - len(damaged)} of {photos} files match their hash")
    if damaged:
        raise click.ClickException(
            f"{len(damaged)} photo files were damaged ({', '.join(d[:16] for d in damaged)}); "
            "set aside under photos/damaged/, they will be fetched again from a peer"
        )
