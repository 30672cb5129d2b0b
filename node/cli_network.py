"""`simpul network …` (the admin's side) and `simpul enroll …` (a new device's side).

Enrollment works by file (over a USB stick) or on the LAN: the new device posts its
request to the admin's node and shows a six-digit code; the admin admits it by typing
that code, so only the device in front of them gets in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path

import click

from simpul.crypto.enrollment import EnrollmentRequest, Grant, pairing_code
from simpul.crypto.node_key import NodeKey
from simpul.node import membership
from simpul.node.cli_support import guarded, read_secret
from simpul.node.runtime import KEY_FILE, prepare_data_dir

log = logging.getLogger(__name__)

ENROLL_WAIT_SECONDS = 15 * 60
ENROLL_POLL_SECONDS = 2.0
HTTP_TIMEOUT = 10


def node_key(data_dir: Path) -> NodeKey:
    prepare_data_dir(data_dir)
    return guarded(NodeKey.load_or_create, data_dir / KEY_FILE)


def scope_option(required: bool) -> click.Option:
    return click.option(
        "--scope",
        "scope",
        multiple=True,
        required=required,
        help="Region-code prefix the node may write (repeatable), e.g. 1709 or 1709042001.",
    )


@click.group()
def network() -> None:
    """Create and run an office network: admit, revoke, move the root key."""


@network.command("create")
@click.option("--name", required=True, help="Network name, e.g. 'Dinsos Bengkulu Tengah'.")
@scope_option(required=True)
@click.option("--node-name", default="admin", show_default=True, help="This device's name.")
@click.option("--passphrase-stdin", is_flag=True, help="Read the root passphrase from stdin.")
@click.pass_obj
def network_create(
    data_dir: Path, name: str, scope: tuple[str, ...], node_name: str, passphrase_stdin: bool
) -> None:
    """Create a network whose root key lives (encrypted) on this device."""
    key = node_key(data_dir)
    passphrase = read_secret("Root key passphrase", passphrase_stdin, confirm=True)
    member = guarded(membership.create, data_dir, key, name, list(scope), node_name, passphrase)
    click.echo(f"network {member.network_id} created; this node is {key.node_id_hex}")
    click.echo(
        "Keep the passphrase safe. Move the root key off this device with "
        "'simpul network export-root FILE --remove' when you do not need to admit devices."
    )


@network.command("export-root")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--remove", is_flag=True, help="Delete the root key from this device afterwards.")
@click.pass_obj
def network_export_root(data_dir: Path, file: Path, remove: bool) -> None:
    """Copy the (encrypted) root key to FILE, e.g. on a USB stick kept in a safe."""
    guarded(membership.export_root, data_dir, file, remove)
    click.echo(f"root key written to {file}" + ("; removed from this device" if remove else ""))


@network.command("import-root")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--passphrase-stdin", is_flag=True)
@click.pass_obj
def network_import_root(data_dir: Path, file: Path, passphrase_stdin: bool) -> None:
    """Bring the root key back onto this device (its passphrase is checked)."""
    passphrase = read_secret("Root key passphrase", passphrase_stdin)
    root = guarded(membership.import_root, data_dir, file, passphrase)
    click.echo(f"root key of network {root.network_id} is on this device")


@network.command("rejoin")
@click.option("--node-name", default="admin", show_default=True, help="This device's name.")
@click.option("--passphrase-stdin", is_flag=True, help="Read the root passphrase from stdin.")
@click.pass_obj
def network_rejoin(data_dir: Path, node_name: str, passphrase_stdin: bool) -> None:
    """After 'simpul restore' on the admin's device: certify this device's new identity
    with the root key restored with it."""
    key = node_key(data_dir)
    passphrase = read_secret("Root key passphrase", passphrase_stdin)
    member = guarded(membership.rejoin, data_dir, key, node_name, passphrase)
    click.echo(f"this node ({key.node_id_hex}) is back in network {member.network_id}")


@network.command("pending")
@click.pass_obj
def network_pending(data_dir: Path) -> None:
    """List devices waiting on the LAN to be admitted (codes are on their screens)."""
    requests = guarded(membership.pending_requests, data_dir)
    if not requests:
        click.echo("no device is waiting")
    for request in requests:
        click.echo(f"{request.node_id}  {request.name}  asked {request.created_at:%Y-%m-%d %H:%M}")


@network.command("admit")
@click.argument("request_file", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--code", help="The six digits shown on the new device (LAN enrollment).")
@click.option("--role", type=click.Choice(["office", "hub"]), default="office", show_default=True)
@scope_option(required=True)
@click.option("--name", help="Name for the device (default: the name it asked for).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the grant.")
@click.option("--passphrase-stdin", is_flag=True)
@click.pass_obj
def network_admit(
    data_dir: Path,
    request_file: Path | None,
    code: str | None,
    role: str,
    scope: tuple[str, ...],
    name: str | None,
    out: Path | None,
    passphrase_stdin: bool,
) -> None:
    """Admit a device: from its REQUEST_FILE (by USB), or by --code on the LAN."""
    if request_file is not None:
        request = guarded(EnrollmentRequest.from_bytes, request_file.read_bytes())
        code = code or pairing_code(request)
        if out is None:
            raise click.UsageError("admitting from a request file needs --out GRANT_FILE")
    elif code is not None:
        request = guarded(membership.request_with_code, data_dir, code)
    else:
        raise click.UsageError("give a REQUEST_FILE or --code CODE")
    passphrase = read_secret("Root key passphrase", passphrase_stdin)
    grant = guarded(
        membership.admit_request, data_dir, request, code, passphrase, role, list(scope), name
    )
    if out is not None:
        out.write_bytes(grant.to_bytes())
        click.echo(f"node {request.node_id} admitted; give {out} to the device")
    else:
        guarded(membership.store_grant, data_dir, request.node_id, grant)
        click.echo(f"node {request.node_id} admitted; it picks up its certificate by itself")


@network.command("revoke")
@click.argument("node_id")
@click.option("--reason", required=True, help="Why, e.g. 'laptop stolen 2026-11-20'.")
@click.option("--passphrase-stdin", is_flag=True)
@click.pass_obj
def network_revoke(data_dir: Path, node_id: str, reason: str, passphrase_stdin: bool) -> None:
    """Revoke NODE_ID: a new signed revocation list and a fresh network data key."""
    passphrase = read_secret("Root key passphrase", passphrase_stdin)
    outcome = guarded(membership.revoke, data_dir, node_id, reason, passphrase)
    click.echo(
        f"node {node_id} revoked (revocation list #{outcome.revocations.number}); "
        f"data key epoch {outcome.data_key.epoch} wrapped for {len(outcome.wraps)} nodes"
    )


@click.group()
def enroll() -> None:
    """Join a network (on the new device)."""


@enroll.command("request")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@click.option("--to", "admin_url", help="The admin node's address, e.g. http://10.0.0.5:8470.")
@click.option("--name", default="node", show_default=True, help="Name this device asks for.")
@click.option("--wait", "wait_seconds", default=ENROLL_WAIT_SECONDS, show_default=True)
@click.pass_obj
def enroll_request(
    data_dir: Path, out: Path | None, admin_url: str | None, name: str, wait_seconds: int
) -> None:
    """Ask to join: write a request file (USB), or send it to the admin's node (LAN)."""
    if (out is None) == (admin_url is None):
        raise click.UsageError("give exactly one of --out FILE or --to URL")
    key = node_key(data_dir)
    request = EnrollmentRequest.create(key, membership.exchange_key(data_dir), name)
    code = pairing_code(request)
    if out is not None:
        out.write_bytes(request.to_bytes())
        click.echo(f"request written to {out}; pairing code {code}")
        return
    assert admin_url is not None
    base = admin_url.rstrip("/")
    _http(f"{base}/enroll/requests", request.to_bytes())
    click.echo(f"Kode pasangan / pairing code: {code}", nl=True)
    click.echo(f"Tell the admin this code; waiting up to {wait_seconds} s to be admitted …")
    grant_bytes = _wait_for_grant(f"{base}/enroll/grants/{key.node_id_hex}", wait_seconds)
    joined = guarded(membership.install_grant, data_dir, key, Grant.from_bytes(grant_bytes))
    click.echo(f"joined network {joined.network_id} as {joined.certificate.name}")


def _http(url: str, body: bytes | None = None) -> bytes | None:
    """POST (with body) or GET; None for 404; a one-line error for anything else."""
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and body is None:
            return None
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["error"]
        raise click.ClickException(f"{url}: {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None


def _wait_for_grant(url: str, wait_seconds: int) -> bytes:
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        grant = _http(url)
        if grant is not None:
            return grant
        time.sleep(ENROLL_POLL_SECONDS)
    raise click.ClickException("not admitted in time; run the command again to retry")


@enroll.command("install")
@click.argument("grant_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def enroll_install(data_dir: Path, grant_file: Path) -> None:
    """Install the GRANT_FILE the admin made for this device."""
    key = node_key(data_dir)
    grant = guarded(Grant.from_bytes, grant_file.read_bytes())
    joined = guarded(membership.install_grant, data_dir, key, grant)
    click.echo(f"joined network {joined.network_id} as {joined.certificate.name}")
