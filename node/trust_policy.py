"""The certificate-based trust policy: who may write what, judged against the network root.

Implements the sync engine's `TrustPolicy` for a node that belongs to a network: an
origin is accepted only with a certificate the root signed, for the key that hashes to
its node id, not expired; it may write only records inside its certificate's scope; and
checkpoints it signed after its revocation time are refused, while earlier ones stay
valid (invariant 4).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from simpul.crypto.clock import utc
from simpul.crypto.node_certificate import (
    CertificateRejected,
    NodeCertificate,
    verify_node_certificate,
)
from simpul.crypto.node_key import node_id_of
from simpul.crypto.revocation import RevocationList
from simpul.node.membership import Membership
from simpul.node.runtime import Node
from simpul.sync.engine import Refusal, SyncEngine

log = logging.getLogger(__name__)


class CertificateTrust:
    """Accepts origins certified by this network's root; scope and revocation enforced."""

    def __init__(
        self,
        root_cert: bytes,
        revocations: RevocationList,
        clock: Callable[[], datetime] = utc,
    ) -> None:
        self.root_cert = root_cert
        self.revocations = revocations
        self.clock = clock  # when to judge certificates at (the node's trusted time)
        self._certificates: dict[bytes, NodeCertificate] = {}

    @classmethod
    def of(cls, membership: Membership, clock: Callable[[], datetime] = utc) -> CertificateTrust:
        return cls(membership.root_cert, membership.revocations, clock)

    def public_key(self, origin: bytes, offered_key: bytes, certificate: bytes) -> bytes | Refusal:
        if not certificate:
            return Refusal("no certificate: the origin is not a member of this network")
        try:
            verified = verify_node_certificate(
                certificate, self.root_cert, now=self.clock(), revocations=None
            )
        except CertificateRejected as exc:
            log.warning("trust refuse origin=%s reason=%s", origin.hex(), exc)
            return Refusal(f"certificate refused: {exc}")
        if node_id_of(verified.public_key) != origin or verified.public_key != offered_key:
            return Refusal("the certificate belongs to another node")
        self._certificates[origin] = verified
        return verified.public_key

    def may_write(self, origin: bytes, kode_wilayah: str) -> bool:
        certificate = self._certificates.get(origin)
        return certificate is not None and certificate.may_write(kode_wilayah)

    def accepts_checkpoint(self, origin: bytes, at_ms: int) -> bool:
        at = datetime.fromtimestamp(at_ms / 1000, UTC)
        return not self.revocations.is_revoked(origin.hex(), at=at)


def network_engine(node: Node, membership: Membership) -> tuple[SyncEngine, CertificateTrust]:
    """The sync engine every carrier of a network member uses, and its trust policy (whose
    revocation list the carrier updates when news arrives)."""
    policy = CertificateTrust.of(membership, node.clock.trusted_now)
    engine = SyncEngine(
        node.db,
        node.key.node_id,
        policy,
        network_id=bytes.fromhex(membership.network_id),
        certificate=membership.certificate.pem,
    )
    return engine, policy
