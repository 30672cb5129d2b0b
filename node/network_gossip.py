"""Network news that travels with sync: the newest revocation list and rotated data keys.

After `simpul network revoke` on the admin's device, every node must learn the new
revocation list (to refuse the revoked node) and the new data key (wrapped to each
remaining node). Both are signed by the root, so any node may pass them on: a node
offers its newest list and every wrapped key it holds; a node that sees a newer version
on a peer (or a drive's `network.json`) takes it, and unwraps the one addressed to
itself. A revoked node's wraps never exist, so it cannot obtain the new key.

News is verified before it is kept, because anyone who made a drive or is a member may
offer it: an offer larger than MAX_NEWS_BYTES, or a list larger than MAX_LIST_BYTES or
not signed by the root, is refused whole; a wrap is stored (and so passed on) only when
its root signature verifies, the epoch in its name is the one the root signed, no other
name already holds the same wrapped key, and fewer than MAX_WRAPS are held. Only stored
wraps are offered and counted in the version, so the version follows verified news only.
Wraps are recognised as this node's by the recipient key inside them, not by their name.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from simpul.crypto.data_key import (
    WRAPPED_KEY_BYTES,
    KeyUnwrapError,
    WrappedKey,
    check_wrapped_key,
    unwrap_data_key,
)
from simpul.crypto.exchange_key import ExchangeKey
from simpul.crypto.revocation import RevocationList, RevocationListRejected
from simpul.node import membership as members
from simpul.node.membership import Membership, load_membership
from simpul.node.sync_session import Trust
from simpul.node.trust_policy import CertificateTrust

log = logging.getLogger(__name__)

WRAP_NAME = re.compile(r"(\d+)-([0-9a-f]{32})\.key")
MAX_WRAPS = 10_000
MAX_LIST_BYTES = 1024 * 1024  # a revocation list (PEM): thousands of entries
# the list and MAX_WRAPS wraps in base64 under their names, with room to spare
MAX_NEWS_BYTES = MAX_LIST_BYTES + MAX_WRAPS * 2 * WRAPPED_KEY_BYTES


class NewsRejected(ValueError):
    """An offer of network news that is refused whole."""


@dataclass
class NewsTaken:
    """What absorbing an offer did: the updated membership (None if nothing was new), and
    what in it was refused."""

    membership: Membership | None
    refused: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=MAX_WRAPS)
def _checked(blob: bytes, root_cert: bytes) -> WrappedKey | str:
    """The facts of a wrap whose root signature verifies, or why it does not (cached:
    the held wraps are checked again each time the version is asked for)."""
    try:
        return check_wrapped_key(blob, root_cert)
    except KeyUnwrapError as exc:
        return str(exc)


def _wraps(data_dir: Path, membership: Membership) -> dict[str, bytes]:
    """The wraps this node holds whose root signature verifies (by name)."""
    folder = data_dir / members.NETWORK_DIR / members.WRAPS
    if not folder.is_dir():
        return {}
    held = {}
    for path in sorted(folder.iterdir()):
        found = path.lstat()
        if (
            WRAP_NAME.fullmatch(path.name)
            and stat.S_ISREG(found.st_mode)
            and found.st_size == WRAPPED_KEY_BYTES
        ):
            blob = path.read_bytes()
            if isinstance(_checked(blob, membership.root_cert), WrappedKey):
                held[path.name] = blob
    return held


def version(data_dir: Path, membership: Membership) -> str:
    """`<revocation list number>.<verified wraps held>`: both only grow, so bigger means newer."""
    return f"{membership.revocations.number}.{len(_wraps(data_dir, membership))}"


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
            "wraps": {
                n: base64.b64encode(b).decode() for n, b in _wraps(data_dir, membership).items()
            },
        }
    ).encode()


def _read_offer(root_cert: bytes, offered: bytes) -> tuple[RevocationList, dict]:
    """The verified revocation list and the (unchecked) wraps of an offer."""
    if len(offered) > MAX_NEWS_BYTES:
        raise NewsRejected(f"{len(offered)} bytes, more than the {MAX_NEWS_BYTES} allowed")
    try:
        document = json.loads(offered)
        listed, wraps = document["revocations"], document["wraps"]
        if not isinstance(listed, str) or not isinstance(wraps, dict):
            raise TypeError("revocations must be text and wraps an object")
        if len(listed) > MAX_LIST_BYTES:
            raise NewsRejected(f"a revocation list of more than {MAX_LIST_BYTES} bytes")
        revocations = RevocationList.parse(listed.encode())
        revocations.verify(root_cert)
    except RecursionError:
        raise NewsRejected("nested too deeply") from None
    except (ValueError, KeyError, TypeError, AttributeError, RevocationListRejected) as exc:
        raise NewsRejected(str(exc)) from None
    return revocations, wraps


def _check_wrap(name: object, text: object, root_cert: bytes) -> tuple[int, WrappedKey, bytes]:
    """A wrap of an offer: its epoch, facts and bytes; KeyUnwrapError if it is junk."""
    found = WRAP_NAME.fullmatch(name) if isinstance(name, str) else None
    if found is None or not isinstance(text, str) or len(text) > 2 * WRAPPED_KEY_BYTES:
        raise KeyUnwrapError("not a wrapped key's name and text")
    try:
        blob = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise KeyUnwrapError(f"not base64: {exc}") from None
    facts = _checked(blob, root_cert)
    if isinstance(facts, str):
        raise KeyUnwrapError(facts)
    if int(found.group(1)) != facts.epoch:
        raise KeyUnwrapError("its name gives another epoch than the root signed")
    return facts.epoch, facts, blob


def _own_exchange_key(data_dir: Path) -> ExchangeKey | None:
    """This node's exchange key, None where it has none (then no wrap can be for it)."""
    path = data_dir / members.EXCHANGE_KEY_FILE
    return ExchangeKey.load(path) if path.exists() else None


def absorb(data_dir: Path, membership: Membership, offered: bytes) -> NewsTaken:
    """Take what is new and verified in a peer's (or a drive's) offer."""
    try:
        revocations, wraps = _read_offer(membership.root_cert, offered)
    except NewsRejected as exc:
        log.warning("network news refused reason=%s", exc)
        return NewsTaken(None, [f"network news refused: {exc}"])
    changed = False
    folder = members.network_dir(data_dir)
    if revocations.supersedes(membership.revocations):
        members.write_public(folder / members.REVOCATIONS, revocations.to_pem())
        log.info("network news revocations list=%d", revocations.number)
        changed = True
    held = _wraps(data_dir, membership)
    known = {_checked(blob, membership.root_cert) for blob in held.values()}  # all verified
    wraps_dir = folder / members.WRAPS
    wraps_dir.mkdir(exist_ok=True, mode=0o700)
    own = _own_exchange_key(data_dir)
    epochs = {key.epoch for key in membership.data_keys}
    new_keys = []
    junk: list[str] = []
    for name, text in wraps.items():
        if name in held:
            continue
        try:
            epoch, facts, blob = _check_wrap(name, text, membership.root_cert)
        except KeyUnwrapError as exc:
            junk.append(str(exc))
            continue
        if facts in known:
            junk.append("a copy of a wrap held under another name")
            continue
        if len(held) >= MAX_WRAPS:
            junk.append(f"more than the {MAX_WRAPS} wraps a node keeps")
            continue
        if own is not None and facts.recipient == own.public_bytes and epoch not in epochs:
            try:
                key = unwrap_data_key(blob, own, membership.root_cert)
            except KeyUnwrapError as exc:
                junk.append(str(exc))
                continue
            new_keys.append(key)
            epochs.add(epoch)
            log.info("network news data key epoch=%d", key.epoch)
        members.write_public(wraps_dir / name, blob)
        held[name] = blob
        known.add(facts)
        changed = True
    refused = []
    if junk:
        log.warning("network news wraps refused count=%d first=%r", len(junk), junk[0])
        refused.append(f"{len(junk)} wrapped keys refused (first: {junk[0]})")
    if new_keys:
        members.save_data_keys(folder, (*membership.data_keys, *new_keys))
    return NewsTaken(members.load_membership(data_dir) if changed else None, refused)


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
        taken = absorb(self.data_dir, self.membership, offered)
        if taken.membership is not None:
            self._take(taken.membership)
        return taken.membership is not None
