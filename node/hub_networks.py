"""The networks a hub serves, as folders in its data dir, and the TLS server name of each.

A hub has one identity (`DATA_DIR/node.key`, `DATA_DIR/exchange.key`) and, for every
network whose root it trusts, a folder `DATA_DIR/networks/<network id>/` laid out like a
node's data dir: `network/` (root certificate, the hub's certificate from that root,
revocation list, data keys) and `simpul.db` (that network's feeds and records). Networks
never share a database, so one office can never read another's records through the hub.

A node names the network it wants in the TLS server name (SNI, `server_name`), so the hub
can present the certificate that network's root signed before any byte of data moves.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from simpul.crypto import x509_profile
from simpul.crypto.enrollment import EnrollmentError, Grant
from simpul.crypto.node_key import NodeKey
from simpul.node import membership
from simpul.node.membership import Membership, MembershipError, load_membership

log = logging.getLogger(__name__)

NETWORKS_DIR = "networks"
NETWORK_ID = re.compile(r"[0-9a-f]{64}")
SERVER_NAME_SUFFIX = ".simpul"


class HubError(Exception):
    """The hub cannot do what was asked; the message says what to do."""


def server_name(network_id: str) -> str:
    """The TLS server name a node asks the hub for to reach `network_id` (two DNS labels:
    a label holds at most 63 characters, a network id has 64)."""
    return f"{network_id[:32]}.{network_id[32:]}{SERVER_NAME_SUFFIX}"


def network_of_server_name(name: str | None) -> str:
    """The network id a server name asks for, or "" when it is not one of ours."""
    if not name or not name.endswith(SERVER_NAME_SUFFIX):
        return ""
    candidate = name[: -len(SERVER_NAME_SUFFIX)].replace(".", "")
    return candidate if NETWORK_ID.fullmatch(candidate) else ""


def network_folder(hub_dir: Path, network_id: str) -> Path:
    return hub_dir / NETWORKS_DIR / network_id


def trusted_networks(hub_dir: Path) -> dict[str, Membership]:
    """Every network this hub serves: network id -> the hub's membership of it."""
    found = {}
    base = hub_dir / NETWORKS_DIR
    for folder in sorted(base.iterdir()) if base.is_dir() else []:
        if NETWORK_ID.fullmatch(folder.name):
            member = load_membership(folder)
            if member is not None and member.network_id == folder.name:
                found[folder.name] = member
    return found


def trust(hub_dir: Path, key: NodeKey, root_cert: bytes, grant: Grant) -> Membership:
    """Serve the network of `root_cert`, as the hub the `grant` (from its admin) certifies."""
    try:
        network_id = x509_profile.fingerprint(x509_profile.load_certificate(root_cert))
    except ValueError as exc:
        raise MembershipError(f"not a root certificate: {exc}") from exc
    if grant.network_id != network_id:
        raise MembershipError(
            f"the grant is for network {grant.network_id}, not for this root ({network_id})"
        )
    folder = network_folder(hub_dir, network_id)
    try:
        joined = membership.install_grant(folder, key, grant, membership.exchange_key(hub_dir))
    except EnrollmentError as exc:
        raise MembershipError(f"grant refused: {exc}") from exc
    if joined.certificate.role != "hub":
        (folder / membership.NETWORK_DIR / membership.NODE_CERT).unlink()
        raise MembershipError(
            "the grant certifies an office node, not a hub: admit the hub with "
            "'simpul network admit REQUEST --role hub --scope CODE --out GRANT'"
        )
    log.info("hub trust network_id=%s node_id=%s", network_id, key.node_id_hex)
    return joined
