"""`simpul usb sync PATH` and `simpul usb inspect PATH`: a courier's drive from the terminal."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from simpul.crypto.node_certificate import CertificateRejected, NodeCertificate
from simpul.node.cli_support import guarded, run
from simpul.node.runtime import open_node
from simpul.node.usb_drive import (
    DEFAULT_KEEP_FREE,
    Drive,
    DriveFolder,
    PathRefused,
    drive_file_names,
    networks,
    read_manifest,
)
from simpul.node.usb_status import tracked_sync
from simpul.sync.drive_file import DriveFileError, read_drive_header

if TYPE_CHECKING:
    from simpul.node.usb_carrier import UsbReport

DRIVE = click.Path(file_okay=False, path_type=Path)


@click.group()
def usb() -> None:
    """Sync with a courier's USB drive (or any folder), or list what one carries."""


@usb.command("sync")
@click.argument("path", type=DRIVE)
@click.option("--compact", is_flag=True, help="Rewrite this network's files as one.")
@click.option(
    "--keep-free",
    type=click.FloatRange(0, 99),
    default=DEFAULT_KEEP_FREE,
    show_default=True,
    help="Percent of the drive to leave free.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def usb_sync(data_dir: Path, path: Path, compact: bool, keep_free: float, as_json: bool) -> None:
    """Import what the drive at PATH carries for this network, then write what it lacks."""

    async def go() -> UsbReport:
        async with open_node(data_dir) as node:
            return await tracked_sync(node, path, keep_free=keep_free, compact=compact)

    report = run(go())
    if as_json:
        click.echo(json.dumps(report.to_json()))
        return
    for problem in report.problems:
        where = f" at byte {problem.offset}" if problem.offset is not None else ""
        click.echo(f"{problem.name}: {problem.status}{where}: {problem.detail}", err=True)
        for refused in problem.refused:
            click.echo(f"  refused {refused}", err=True)
    for network in report.other_networks:
        click.echo(f"ignored the folder of another network: {network}", err=True)
    click.echo(
        f"read {len(report.files)} files ({report.imported} new entries); wrote "
        f"{len(report.written)} files ({report.written_entries} entries)"
        + (f"; removed {len(report.removed)} old files" if report.removed else "")
        + (f"; {len(report.problems)} files with problems" if report.problems else "")
    )
    click.echo("selesai, aman dicabut (done, safe to unplug)")


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe_file(folder: DriveFolder, name: str) -> dict[str, Any]:
    """What one drive file says about itself, from its header alone (nothing decrypted)."""
    try:
        source = folder.open_file(name)
    except PathRefused as exc:
        return {"file": name, "bytes": 0, "error": exc.reason}
    with source:
        try:
            drive_file = read_drive_header(source)
        except DriveFileError as exc:
            return {"file": name, "bytes": source.size, "error": str(exc)}
    header = drive_file.header
    try:
        writer_name = NodeCertificate.parse(header.certificate.encode()).name
        signed = drive_file.signed_by(NodeCertificate.parse(header.certificate.encode()).public_key)
    except CertificateRejected:
        writer_name, signed = "?", False
    return {
        "file": name,
        "bytes": source.size,
        "complete": source.size == drive_file.full_size,
        "signature_valid": signed,
        "network": header.network,
        "writer": header.writer,
        "writer_name": writer_name,
        "written": _when(header.created_ms),
        "key_epoch": header.epoch,
        "entries": header.entries,
        "origins": [{"origin": r.origin, "from": r.first, "to": r.last} for r in header.origins],
    }


def describe_network(simpul: DriveFolder, network: str) -> list[dict[str, Any]]:
    try:
        folder = simpul.child(network)
    except PathRefused as exc:
        return [{"file": exc.path, "bytes": 0, "error": exc.reason}]
    with folder:
        return [describe_file(folder, name) for name in drive_file_names(folder)]


def describe_drive(path: Path) -> dict[str, Any]:
    with Drive(path).open() as simpul:
        manifest, refusal = read_manifest(simpul)
        facts: dict[str, Any] = {
            "drive": str(path),
            "manifest": manifest,
            "networks": {n: describe_network(simpul, n) for n in networks(simpul)},
        }
        if refusal is not None:
            facts["manifest_error"] = str(refusal)
        return facts


@usb.command("inspect")
@click.argument("path", type=DRIVE)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def usb_inspect(path: Path, as_json: bool) -> None:
    """List what the drive at PATH carries (no key needed, nothing is decrypted)."""
    if not Drive(path).exists():
        raise click.ClickException(f"{path} holds no SIMPUL folder")
    facts = guarded(describe_drive, path)
    if as_json:
        click.echo(json.dumps(facts))
        return
    if "manifest_error" in facts:
        click.echo(facts["manifest_error"], err=True)
    for network, files in facts["networks"].items():
        click.echo(f"network {network}: {len(files)} files")
        for f in files:
            if "error" in f:
                click.echo(f"  {f['file']}  {f['bytes']} B  unreadable: {f['error']}")
                continue
            state = "complete" if f["complete"] else "INCOMPLETE"
            state += "" if f["signature_valid"] else ", BAD SIGNATURE"
            click.echo(
                f"  {f['file']}  {f['bytes']} B  {state}  written {f['written']} by "
                f"{f['writer']} ({f['writer_name']})  key epoch {f['key_epoch']}  "
                f"{f['entries']} entries"
            )
            for o in f["origins"]:
                click.echo(f"    origin {o['origin']}  seq {o['from']}-{o['to']}")
