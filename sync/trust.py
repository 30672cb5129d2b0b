"""Who may write what: the trust policy the sync engine asks, and the open policy.

The engine never judges certificates itself; a carrier injects a policy (certificate-based
for members of a network, open for a node that has not joined one, and in tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from simpul.crypto.node_key import node_id_of


@dataclass(frozen=True)
class Refusal:
    """A trust policy's "no", with the reason shown to the admin."""

    reason: str


class TrustPolicy(Protocol):
    """Who may write what: the engine asks, a policy (open, or certificate-based) answers."""

    def public_key(self, origin: bytes, offered_key: bytes, certificate: bytes) -> bytes | Refusal:
        """The key that verifies `origin`'s checkpoints, judged from what the bundle (or this
        store, from an earlier bundle) offers: a raw Ed25519 key and a certificate (PEM, or
        empty for a node without a network); or why the origin is not accepted."""
        ...

    def may_write(self, origin: bytes, kode_wilayah: str) -> bool:
        """True when `origin` may author changes to a record in region `kode_wilayah`."""
        ...

    def accepts_checkpoint(self, origin: bytes, at_ms: int) -> bool:
        """False for a checkpoint signed after the origin's revocation cut-off."""
        ...


class OpenTrust:
    """Accepts any origin whose raw public key hashes to its node id; no scope, no revocation.

    For nodes that have not joined a network yet, and for tests.
    """

    def public_key(self, origin: bytes, offered_key: bytes, certificate: bytes) -> bytes | Refusal:
        if node_id_of(offered_key) != origin:
            return Refusal("the offered public key does not belong to this origin")
        return offered_key

    def may_write(self, origin: bytes, kode_wilayah: str) -> bool:
        return True

    def accepts_checkpoint(self, origin: bytes, at_ms: int) -> bool:
        return True
