"""`simpul backup`, `simpul restore` and `simpul doctor`: a healthy node and safe data."""

from __future__ import annotations

import json
from pathlib import Path

import click

from simpul.node import backup as backups
from simpul.node import doctor as checks
from simpul.node.cli_support import guarded, read_secret, run


@click.command("backup")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--passphrase-stdin", is_flag=True, help="Read the backup passphrase from stdin.")
@click.pass_obj
def backup(data_dir: Path, out: Path, passphrase_stdin: bool) -> None:
    """Write an encrypted backup of this node to OUT (works while the node runs)."""
    passphrase = read_secret("Backup passphrase", passphrase_stdin, confirm=True)
    manifest = guarded(backups.write_backup, data_dir, out, passphrase)
    click.echo(
        f"backup of node {manifest.node_id or '-'} written to {out}: {manifest.records} "
        f"records, {len(manifest.files)} files. Keep it and its passphrase apart."
    )


@click.command("restore")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--passphrase-stdin", is_flag=True, help="Read the backup passphrase from stdin.")
@click.pass_obj
def restore(data_dir: Path, source: Path, passphrase_stdin: bool) -> None:
    """Restore the backup SOURCE into a new, empty data dir, as a new node."""
    passphrase = read_secret("Backup passphrase", passphrase_stdin)
    done = run(backups.restore(source, data_dir, passphrase))
    click.echo(
        f"restored {done.records} records of node {done.old_node_id or '-'}; "
        f"this device is the new node {done.new_node_id}."
    )
    if done.holds_root:
        click.echo(
            "The network root key came back with it: certify this device with "
            "'simpul network rejoin', and revoke the old node if that device is lost."
        )
    elif done.enrolled_before:
        click.echo(
            "Enrol it before it syncs: 'simpul enroll request --to http://ADMIN:8470' "
            f"(or --out FILE), and revoke the old node {done.old_node_id} if that device is "
            "lost."
        )


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("--hub", "hub_url", default=None, help="Also check that the hub at this URL answers.")
@click.pass_obj
def doctor(data_dir: Path, as_json: bool, hub_url: str | None) -> None:
    """Check this node and explain, in plain words, what is wrong and how to fix it."""
    results = run(checks.run_checks(data_dir, hub_url))
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], ensure_ascii=False))
    else:
        for result in results:
            click.echo(f"[{result.status.upper():4}] {result.name}: {result.explanation}")
            if result.fix:
                click.echo(f"       fix: {result.fix}")
    if any(r.status == checks.FAIL for r in results):
        raise SystemExit(1)
