"""Network news that travels with sync: the newest revocation list and rotated data keys.

After `simpul network revoke` on the admin's device, every node must learn the new
revocation list (to refuse the revoked node) and the new data key (wrapped to each
remaining node). Both are signed by the root, so any node may pass them on: a node
offers its newest list and every wrapped key it holds; a node that sees a newer version
on a peer fetches it, verifies the list against the root, keeps every wrap (to pass on),
and unwraps the one addressed to itself. A revoked node's wraps never exist, so it
cannot obtain the new key.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path

from simpul.crypto.data_key import KeyUnwrapError, unwrap_data_key
from simpul.crypto.revocation import RevocationList, RevocationListRejected
from simpul.node import membership as members
from simpul.node.membership import Membership, load_membership
from simpul.node.sync_session import Trust
from simpul.node.trust_policy import CertificateTrust

log = logging.getLogger(__name__)

WRAP_NAME = re.compile(r"(\d+)-([0-9a-f]{32})\.key")
MAX_WRAPS = 10_000


def _wraps(data_dir: Path) -> dict[str, bytes]:
    folder = data_dir / members.NETWORK_DIR / members.WRAPS
    if not folder.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in folder.iterdir() if WRAP_NAME.fullmatch(p.name)}


def version(data_dir: Path, membership: Membership) -> str:
    """`<revocation list number>.<wraps held>`: both only grow, so bigger means newer."""
    return f"{membership.revocations.number}.{len(_wraps(data_dir))}"


def is_newer(theirs: str, ours: str) -> bool:
    try:
        their_list, their_wraps = (int(x) for x in theirs.split("."))
        our_list, our_wraps = (int(x) for x in ours.split("."))
    except ValueError:
        return False
    return their_list > our_list or their_wraps > our_wraps


def export(data_dir: Path, membership: Membership) -> bytes:
    return json.dumps(
        {
            "revocations": membership.revocations.to_pem().decode("ascii"),
            "wraps": {n: base64.b64encode(b).decode() for n, b in _wraps(data_dir).items()},
        }
    ).encode()


def absorb(data_dir: Path, membership: Membership, offered: bytes) -> Membership | None:
    """Take what is new in a peer's offer; the updated membership, or None if nothing was."""
    try:
        document = json.loads(offered)
        revocations = RevocationList.parse(document["revocations"].encode())
        revocations.verify(membership.root_cert)
        wraps = {
            name: base64.b64decode(blob)
            for name, blob in document["wraps"].items()
            if WRAP_NAME.fullmatch(name)
        }
    except (ValueError, KeyError, TypeError, AttributeError, RevocationListRejected) as exc:
        log.warning("network news refused reason=%s", exc)
        return None
    changed = False
    folder = members.network_dir(data_dir)
    if revocations.supersedes(membership.revocations):
        members.write_public(folder / members.REVOCATIONS, revocations.to_pem())
        log.info("network news revocations list=%d", revocations.number)
        changed = True
    held = _wraps(data_dir)
    wraps_dir = folder / members.WRAPS
    wraps_dir.mkdir(exist_ok=True, mode=0o700)
    own = membership.certificate.node_id
    epochs = {key.epoch for key in membership.data_keys}
    new_keys = []
    for name, blob in list(wraps.items())[:MAX_WRAPS]:
        if name in held:
            continue
        epoch, recipient = WRAP_NAME.fullmatch(name).groups()  # type: ignore[union-attr]
        if recipient == own and int(epoch) not in epochs:
            try:
                key = unwrap_data_key(blob, members.exchange_key(data_dir), membership.root_cert)
            except KeyUnwrapError as exc:
                log.warning("network news wrap refused name=%s reason=%s", name, exc)
                continue
            new_keys.append(key)
            log.info("network news data key epoch=%d", key.epoch)
        members.write_public(wraps_dir / name, blob)
        changed = True
    if new_keys:
        members.save_data_keys(folder, (*membership.data_keys, *new_keys))
    return members.load_membership(data_dir) if changed else None


class NewsDesk:
    """One network's news as a running node or hub holds it: offers it (the `NetworkNews`
    of a sync server), takes newer news from peers, and keeps the session trust and the
    trust policy on the newest revocation list."""

    def __init__(
        self, data_dir: Path, membership: Membership, policy: CertificateTrust | None = None
    ) -> None:
        self.data_dir = data_dir
        self.membership = membership
        self.trust = Trust(membership.root_cert, membership.revocations)
        self.policy = policy or CertificateTrust.of(membership)

    def _take(self, updated: Membership) -> None:
        self.membership = updated
        self.trust.revocations = updated.revocations
        self.policy.revocations = updated.revocations
        log.info(
            "network news taken revocations=%d data_key_epoch=%d",
            updated.revocations.number,
            max((k.epoch for k in updated.data_keys), default=0),
        )

    def reload(self) -> None:
        """Pick up what an admin command changed on disk (e.g. `simpul network revoke`)."""
        current = load_membership(self.data_dir)
        if current is not None and current.revocations.supersedes(self.membership.revocations):
            self._take(current)

    def version(self) -> str:
        self.reload()
        return version(self.data_dir, self.membership)

    def offer(self) -> bytes:
        self.reload()
        return export(self.data_dir, self.membership)

    def take(self, offered: bytes) -> bool:
        """Absorb a peer's network news; True when something in it was new."""
        updated = absorb(self.data_dir, self.membership, offered)
        if updated is not None:
            self._take(updated)
        return updated is not None
