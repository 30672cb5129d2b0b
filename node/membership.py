"""This node's place in a network, as files in its data dir: certificates, revocations, keys.

Layout under `DATA_DIR/network/` (secrets 0600, the folder 0700):

| file | holds |
| --- | --- |
| `root.cert.pem` | the network root certificate (network id = its fingerprint) |
| `node.cert.pem` | this node's certificate, signed by the root |
| `revocations.crl.pem` | the newest revocation list this node knows |
| `data-keys.json` | every network data key epoch this node holds (0600) |
| `root.key` | the encrypted root key, only on the admin's device, movable off it |
| `members.json` | on the admin's device: nodes it admitted (for data-key rotation) |
| `pending/` | LAN enrollment: requests waiting for the admin, and the grants made |
| `wraps/` | after a revocation: the new data key wrapped to each remaining node |

A waiting request keeps the network address it came from beside it (`.source`) and is
forgotten after PENDING_SECONDS.

The node's exchange key (X25519, for receiving the data key) is `DATA_DIR/exchange.key`.
Creating or joining a network certifies the node's existing Ed25519 key, so records it
already holds stay valid and will sync.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from simpul.crypto import x509_profile
from simpul.crypto.data_key import DataKey, rotate_data_key, wrap_data_key
from simpul.crypto.enrollment import EnrollmentRequest, Grant, admit, pairing_code
from simpul.crypto.exchange_key import ExchangeKey
from simpul.crypto.network_root import NetworkRoot, create_network
from simpul.crypto.node_certificate import (
    NodeCertificate,
    issue_node_certificate,
    verify_node_certificate,
)
from simpul.crypto.node_key import NodeKey, write_private_file
from simpul.crypto.revocation import (
    RevocationList,
    empty_revocation_list,
    issue_revocation_list,
)
from simpul.sync.database import DB_FILE
from simpul.sync.scope_census import describe, held_outside

log = logging.getLogger(__name__)

NETWORK_DIR = "network"
EXCHANGE_KEY_FILE = "exchange.key"
ROOT_CERT = "root.cert.pem"
NODE_CERT = "node.cert.pem"
REVOCATIONS = "revocations.crl.pem"
DATA_KEYS = "data-keys.json"
ROOT_KEY = "root.key"
MEMBERS = "members.json"
PENDING = "pending"
WRAPS = "wraps"
MAX_PENDING = 50
# A device waits 15 minutes for its grant ('simpul network join --wait'); its request is
# kept a little longer, then forgotten, so junk requests cannot fill the queue for good.
PENDING_SECONDS = 20 * 60
MAX_PENDING_PER_SOURCE = 3  # requests waiting from one network address at a time
NODE_ID = re.compile(r"[0-9a-f]{32}")


class MembershipError(Exception):
    """A network operation that cannot be done in this node's state; the message says why."""


class TooManyWaiting(MembershipError):
    """The enrollment queue (`whole_queue`), or one address's share of it, is full."""

    def __init__(self, message: str, whole_queue: bool) -> None:
        super().__init__(message)
        self.whole_queue = whole_queue


@dataclass(frozen=True)
class Membership:
    """What a node that belongs to a network knows of it."""

    root_cert: bytes
    certificate: NodeCertificate
    revocations: RevocationList
    data_keys: tuple[DataKey, ...]

    @property
    def network_id(self) -> str:
        return x509_profile.fingerprint(x509_profile.load_certificate(self.root_cert))

    @property
    def data_key(self) -> DataKey:
        return max(self.data_keys, key=lambda k: k.epoch)


def network_dir(data_dir: Path) -> Path:
    path = data_dir / NETWORK_DIR
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def exchange_key(data_dir: Path) -> ExchangeKey:
    return ExchangeKey.load_or_create(data_dir / EXCHANGE_KEY_FILE)


def write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_data_keys(folder: Path, keys: tuple[DataKey, ...]) -> None:
    document = [{"key_id": k.key_id, "epoch": k.epoch, "secret": k.secret.hex()} for k in keys]
    write_private_file(folder / DATA_KEYS, json.dumps(document, indent=1).encode())


def _load_data_keys(folder: Path) -> tuple[DataKey, ...]:
    path = folder / DATA_KEYS
    if not path.exists():
        return ()
    try:
        return tuple(
            DataKey(d["key_id"], int(d["epoch"]), bytes.fromhex(d["secret"]))
            for d in json.loads(path.read_text())
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise MembershipError(f"{path} is damaged: {exc}") from exc


def load_membership(data_dir: Path) -> Membership | None:
    """This node's membership, or None when it has not created or joined a network."""
    folder = data_dir / NETWORK_DIR
    if not (folder / NODE_CERT).exists():
        return None
    try:
        return Membership(
            root_cert=(folder / ROOT_CERT).read_bytes(),
            certificate=NodeCertificate.parse((folder / NODE_CERT).read_bytes()),
            revocations=RevocationList.parse((folder / REVOCATIONS).read_bytes()),
            data_keys=_load_data_keys(folder),
        )
    except OSError as exc:
        raise MembershipError(f"network files in {folder} are incomplete: {exc}") from exc


class RevocationsWatch:
    """Notices that the revocation list file of a data dir was replaced (by `simpul network
    revoke`, the Admin page, a drive or network news): a running node asks before every
    handshake and session, so the check is one `stat`, and the file is read only on change.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / NETWORK_DIR / REVOCATIONS
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            found = self.path.stat()
        except OSError:
            return None
        return found.st_mtime_ns, found.st_size, found.st_ino

    def changed(self) -> bool:
        """True once after each replacement of the file (written by rename: a new inode)."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        return True


def _install(
    data_dir: Path, root_cert: bytes, node_cert: bytes, revocations: RevocationList, keys
) -> Membership:
    folder = network_dir(data_dir)
    write_public(folder / ROOT_CERT, root_cert)
    write_public(folder / REVOCATIONS, revocations.to_pem())
    save_data_keys(folder, tuple(keys))
    write_public(folder / NODE_CERT, node_cert)  # last: its presence means "member"
    membership = load_membership(data_dir)
    assert membership is not None
    return membership


def _refuse_if_member(data_dir: Path) -> None:
    existing = load_membership(data_dir)
    if existing is not None:
        raise MembershipError(
            f"this node already belongs to network {existing.network_id}; "
            "a node belongs to one network"
        )


def _refuse_records_outside(data_dir: Path, scope: list[str], wider: str) -> None:
    """Refuse to join while this node holds households outside the scope it would get:
    no peer could accept them (`wider`: how to get a scope that covers them)."""
    outside = held_outside(data_dir / DB_FILE, scope)
    if outside:
        raise MembershipError(
            f"this node holds {describe(outside)} outside the scope {', '.join(scope)}: "
            f"no other node of the network could accept them. Either {wider}, or export "
            "them first ('simpul export --out FILE'), move this data dir aside, join with "
            "an empty one and import FILE there (rows outside the scope are refused row by row)"
        )


def create(
    data_dir: Path, node_key: NodeKey, name: str, scope: list[str], node_name: str, passphrase: str
) -> Membership:
    """Make a new network with this node as its first member (role office, full scope)."""
    _refuse_if_member(data_dir)
    _refuse_records_outside(
        data_dir, scope, "create the network with a --scope that covers them too"
    )
    root = create_network(name, scope)
    root.save(network_dir(data_dir) / ROOT_KEY, passphrase)
    node_cert = issue_node_certificate(root, node_key.public_bytes, node_name, "office", scope)
    _record_member(data_dir, node_key.node_id_hex, node_name, exchange_key(data_dir).public_bytes)
    log.info("network create network_id=%s node_id=%s", root.network_id, node_key.node_id_hex)
    return _install(
        data_dir, root.cert_pem, node_cert, empty_revocation_list(root), [DataKey.generate()]
    )


def rejoin(data_dir: Path, node_key: NodeKey, node_name: str, passphrase: str) -> Membership:
    """Certify this device's own new key with the root key it holds: the admin's device
    after `simpul restore`, which gives a node a new identity (decision 0009)."""
    _refuse_if_member(data_dir)
    root = unlock_root(data_dir, passphrase)
    _refuse_records_outside(data_dir, list(root.scope), "use the data dir of another admin device")
    folder = network_dir(data_dir)
    try:
        revocations = RevocationList.parse((folder / REVOCATIONS).read_bytes())
    except OSError as exc:
        raise MembershipError(f"the network files in {folder} are incomplete: {exc}") from exc
    keys = _load_data_keys(folder) or (DataKey.generate(),)
    node_cert = issue_node_certificate(
        root, node_key.public_bytes, node_name, "office", list(root.scope)
    )
    _record_member(data_dir, node_key.node_id_hex, node_name, exchange_key(data_dir).public_bytes)
    log.info("network rejoin network_id=%s node_id=%s", root.network_id, node_key.node_id_hex)
    return _install(data_dir, root.cert_pem, node_cert, revocations, keys)


def unlock_root(data_dir: Path, passphrase: str) -> NetworkRoot:
    path = data_dir / NETWORK_DIR / ROOT_KEY
    if not path.exists():
        raise MembershipError(
            "the network root key is not on this device; "
            "bring it back with 'simpul network import-root FILE'"
        )
    return NetworkRoot.load(path, passphrase)


def import_root(data_dir: Path, source: Path, passphrase: str) -> NetworkRoot:
    membership = load_membership(data_dir)
    root = NetworkRoot.load(source, passphrase)
    if membership is not None and root.network_id != membership.network_id:
        raise MembershipError(f"{source} is the root of another network ({root.network_id})")
    write_private_file(network_dir(data_dir) / ROOT_KEY, source.read_bytes())
    return root


def export_root(data_dir: Path, target: Path, remove: bool) -> None:
    path = data_dir / NETWORK_DIR / ROOT_KEY
    if not path.exists():
        raise MembershipError("the network root key is not on this device")
    write_private_file(target, path.read_bytes())
    if remove:
        path.unlink()


def _members_path(data_dir: Path) -> Path:
    return network_dir(data_dir) / MEMBERS


def _members(data_dir: Path) -> dict[str, dict]:
    path = _members_path(data_dir)
    return json.loads(path.read_text()) if path.exists() else {}


def admitted_devices(data_dir: Path) -> dict[str, str]:
    """Node id -> name of every device this (admin's) node admitted."""
    return {node_id: str(info.get("name", "")) for node_id, info in _members(data_dir).items()}


def _record_member(data_dir: Path, node_id: str, name: str, exchange_public: bytes) -> None:
    members = _members(data_dir)
    members[node_id] = {"name": name, "exchange_public_key": exchange_public.hex()}
    write_private_file(_members_path(data_dir), json.dumps(members, indent=1).encode())


def admit_request(
    data_dir: Path,
    request: EnrollmentRequest,
    code: str,
    passphrase: str,
    role: str,
    scope: list[str],
    name: str | None,
) -> Grant:
    """Certify a requesting device (the admin's side); the grant goes back to it."""
    membership = load_membership(data_dir)
    if membership is None:
        raise MembershipError("this node has no network; create one with 'simpul network create'")
    root = unlock_root(data_dir, passphrase)
    try:
        grant = admit(
            root,
            request,
            code=code,
            role=role,
            scope=scope,
            name=name,
            data_key=membership.data_key,
            revocations=membership.revocations,
        )
    except ValueError as exc:  # a role, name or scope the certificate cannot carry
        raise MembershipError(f"cannot admit this device: {exc}") from None
    _record_member(data_dir, request.node_id, name or request.name, request.exchange_public_key)
    log.info("network admit node_id=%s role=%s scope=%s", request.node_id, role, ",".join(scope))
    return grant


def install_grant(
    data_dir: Path, node_key: NodeKey, grant: Grant, exchange: ExchangeKey | None = None
) -> Membership:
    """Join the network of `grant` (the new device's side; a hub passes its one exchange
    key, since it keeps each network it serves in a folder of its own)."""
    _refuse_if_member(data_dir)
    certificate, data_key = grant.accept(node_key, exchange or exchange_key(data_dir))
    _refuse_records_outside(
        data_dir,
        list(certificate.scope),
        "ask the admin for a grant with a --scope that covers them ('simpul network admit')",
    )
    log.info("enroll install network_id=%s node_id=%s", grant.network_id, certificate.node_id)
    return _install(
        data_dir, grant.root_certificate, certificate.pem, grant.revocations, [data_key]
    )


@dataclass(frozen=True)
class Revocation:
    """The outcome of revoking a node: the new list and the new data key's wraps."""

    revocations: RevocationList
    data_key: DataKey
    wraps: dict[str, bytes]


def revoke(data_dir: Path, node_id: str, reason: str, passphrase: str) -> Revocation:
    """Revoke `node_id`, rotate the data key and wrap it to every remaining member."""
    membership = load_membership(data_dir)
    if membership is None:
        raise MembershipError("this node has no network")
    root = unlock_root(data_dir, passphrase)
    try:
        revocations = issue_revocation_list(root, membership.revocations, node_id, reason)
    except ValueError as exc:
        raise MembershipError(str(exc)) from exc
    data_key = rotate_data_key(membership.data_key)
    wraps = {
        member: wrap_data_key(root, data_key, bytes.fromhex(info["exchange_public_key"]))
        for member, info in _members(data_dir).items()
        if not revocations.is_revoked(member)
    }
    folder = network_dir(data_dir)
    write_public(folder / REVOCATIONS, revocations.to_pem())
    save_data_keys(folder, (*membership.data_keys, data_key))
    wraps_dir = folder / WRAPS
    wraps_dir.mkdir(exist_ok=True, mode=0o700)
    for member, wrapped in wraps.items():
        write_public(wraps_dir / f"{data_key.epoch}-{member}.key", wrapped)
    log.info(
        "network revoke node_id=%s list=%d epoch=%d", node_id, revocations.number, data_key.epoch
    )
    return Revocation(revocations, data_key, wraps)


def verified_certificate(membership: Membership) -> NodeCertificate:
    """This node's certificate, checked against the root and revocation list now."""
    return verify_node_certificate(
        membership.certificate.pem,
        membership.root_cert,
        now=datetime.now(UTC),
        revocations=membership.revocations,
    )


# ----- LAN enrollment: requests wait in pending/ until the admin types the code --------------


def _pending_dir(data_dir: Path) -> Path:
    path = network_dir(data_dir) / PENDING
    path.mkdir(exist_ok=True, mode=0o700)
    return path


def _waiting(data_dir: Path) -> list[Path]:
    """The request files of devices still waiting, after forgetting expired ones."""
    waiting = []
    deadline = time.time() - PENDING_SECONDS
    for path in sorted(_pending_dir(data_dir).glob("*.request")):
        if path.with_suffix(".grant").exists():
            continue
        try:
            expired = path.stat().st_mtime < deadline
            if expired:
                path.unlink()
                path.with_suffix(".source").unlink(missing_ok=True)
                log.info("enroll request expired node_id=%s", path.stem)
                continue
        except FileNotFoundError:  # admitted or expired meanwhile
            continue
        waiting.append(path)
    return waiting


def _source_of(request_file: Path) -> str:
    try:
        return request_file.with_suffix(".source").read_text()
    except FileNotFoundError:
        return ""


def store_pending_request(data_dir: Path, request: EnrollmentRequest, source: str) -> None:
    """Keep a device's request (from network address `source`) for the admin.

    A device that asks again refreshes its request. Raises TooManyWaiting when `source`
    already has MAX_PENDING_PER_SOURCE other requests waiting, or MAX_PENDING are waiting
    in all."""
    waiting = [p for p in _waiting(data_dir) if p.stem != request.node_id]
    if sum(_source_of(p) == source for p in waiting) >= MAX_PENDING_PER_SOURCE:
        raise TooManyWaiting(
            f"{MAX_PENDING_PER_SOURCE} devices from {source} are already waiting to be "
            f"admitted; admit them or wait {PENDING_SECONDS // 60} minutes",
            whole_queue=False,
        )
    if len(waiting) >= MAX_PENDING:
        raise TooManyWaiting(
            "too many devices are waiting to be admitted; admit or wait", whole_queue=True
        )
    folder = _pending_dir(data_dir)
    write_public(folder / f"{request.node_id}.source", source.encode())
    write_public(folder / f"{request.node_id}.request", request.to_bytes())


def pending_requests(data_dir: Path) -> list[EnrollmentRequest]:
    """Requests of devices waiting to be admitted (none older than PENDING_SECONDS)."""
    return [EnrollmentRequest.from_bytes(path.read_bytes()) for path in _waiting(data_dir)]


def request_with_code(data_dir: Path, code: str) -> EnrollmentRequest:
    """The pending request whose pairing code is `code` (the six digits on the new device)."""
    for request in pending_requests(data_dir):
        if pairing_code(request) == code.strip():
            return request
    raise MembershipError(
        f"no waiting device shows the code {code}; check the code on the new device's screen"
    )


def store_grant(data_dir: Path, node_id: str, grant: Grant) -> None:
    write_public(_pending_dir(data_dir) / f"{node_id}.grant", grant.to_bytes())


def pending_grant(data_dir: Path, node_id: str) -> bytes | None:
    if not NODE_ID.fullmatch(node_id):
        return None
    path = _pending_dir(data_dir) / f"{node_id}.grant"
    return path.read_bytes() if path.exists() else None


def admits_devices(data_dir: Path) -> bool:
    """True on the device that holds the root key (where LAN requests are admitted)."""
    return (data_dir / NETWORK_DIR / ROOT_KEY).exists()
