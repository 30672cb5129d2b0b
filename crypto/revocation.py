"""The network's revocation list: a numbered X.509 CRL signed by the network root.

Format: a standard X.509 v2 CRL (PEM) issued by the root certificate's subject, signed with
the root's Ed25519 key, carrying the cRLNumber extension. Each revoked node is one entry
whose serial number is its node id (node certificates use the node id as serial, see
`x509_profile`), whose revocationDate is the moment the revocation takes effect, and whose
non-critical simpulRevocationReason entry extension holds the admin's reason as text.
nextUpdate is set to the root's expiry: offices go offline for weeks, and an old list must
stay usable (OpenSSL refuses an expired CRL) until a newer number arrives.

Lists are cumulative: list n+1 holds every entry of list n plus one. A higher number
supersedes a lower one. Because it is a real CRL, the TLS contexts load it and OpenSSL
refuses revoked peers during the handshake itself.

`is_revoked(node_id, at)` answers "had the revocation taken effect at `at`?", so entries a
node checkpointed before it was revoked stay valid while later ones are refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from simpul.crypto import x509_profile
from simpul.crypto.clock import utc
from simpul.crypto.network_root import NetworkRoot

log = logging.getLogger(__name__)

MAX_REASON_LENGTH = 200


class RevocationListRejected(Exception):
    """A revocation list that is malformed or not signed by this network's root."""


@dataclass(frozen=True)
class RevocationEntry:
    """One revoked node: from `revoked_at` on, nothing it signs is accepted."""

    node_id: str
    revoked_at: datetime
    reason: str


@dataclass(frozen=True)
class RevocationList:
    """A parsed revocation list; call `verify(root_cert)` before trusting it."""

    crl: x509.CertificateRevocationList
    number: int
    issued_at: datetime
    entries: tuple[RevocationEntry, ...]
    _by_node: dict[str, RevocationEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_node = {entry.node_id: entry for entry in self.entries}
        if len(by_node) != len(self.entries):
            raise RevocationListRejected("a node appears twice in the revocation list")
        object.__setattr__(self, "_by_node", by_node)

    @classmethod
    def parse(cls, data: bytes) -> RevocationList:
        """Read a PEM or DER revocation list (structure only; see `verify`)."""
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                crl = x509.load_pem_x509_crl(data)
            else:
                crl = x509.load_der_x509_crl(data)
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            entries = tuple(
                RevocationEntry(
                    node_id=x509_profile.serial_to_node_id(revoked.serial_number),
                    revoked_at=revoked.revocation_date_utc,
                    reason=x509_profile.decode_text(
                        x509_profile.extension_value(
                            revoked.extensions, x509_profile.REVOCATION_REASON_OID
                        )
                    ),
                )
                for revoked in crl
            )
        except (ValueError, x509.ExtensionNotFound, x509.InvalidVersion) as exc:
            raise RevocationListRejected(f"malformed revocation list: {exc}") from exc
        return cls(crl, number, crl.last_update_utc, entries)

    def to_pem(self) -> bytes:
        return self.crl.public_bytes(serialization.Encoding.PEM)

    def verify(self, root_cert: bytes | x509.Certificate) -> None:
        """Raise RevocationListRejected unless the root of `root_cert` signed this list."""
        root = x509_profile.load_certificate(root_cert)
        public = root.public_key()
        if self.crl.issuer != root.subject or not isinstance(public, Ed25519PublicKey):
            raise RevocationListRejected("revocation list was issued by another network")
        try:
            valid = self.crl.is_signature_valid(public)
        except InvalidSignature:
            valid = False
        if not valid:
            raise RevocationListRejected("revocation list is not signed by this network's root")

    def is_revoked(self, node_id: str, at: datetime | None = None) -> bool:
        """Whether `node_id` is revoked at all (`at` None) or had been revoked by `at`."""
        entry = self._by_node.get(node_id)
        if entry is None:
            return False
        return at is None or entry.revoked_at <= utc(at)

    def supersedes(self, other: RevocationList) -> bool:
        """True when this list is newer than `other` and should replace it."""
        return self.number > other.number


def _sign(
    root: NetworkRoot, number: int, entries: Iterable[RevocationEntry], now: datetime
) -> RevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(root.certificate.subject)
        .last_update(now)
        .next_update(root.certificate.not_valid_after_utc)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.private_key.public_key()),
            critical=False,
        )
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(x509_profile.node_id_to_serial(entry.node_id))
            .revocation_date(entry.revoked_at)
            .add_extension(
                x509.UnrecognizedExtension(
                    x509_profile.REVOCATION_REASON_OID, x509_profile.encode_text(entry.reason)
                ),
                critical=False,
            )
            .build()
        )
    crl = builder.sign(root.private_key, None)
    return RevocationList.parse(crl.public_bytes(serialization.Encoding.DER))


def empty_revocation_list(root: NetworkRoot, now: datetime | None = None) -> RevocationList:
    """List number 0: nobody revoked yet (a network always has a list, so TLS can check)."""
    return _sign(root, 0, (), utc(now))


def issue_revocation_list(
    root: NetworkRoot,
    previous: RevocationList | None,
    node_id: str,
    reason: str,
    now: datetime | None = None,
    *,
    revoked_at: datetime | None = None,
) -> RevocationList:
    """List number previous+1 with every previous entry plus `node_id`.

    `revoked_at` (default `now`) may lie in the past, e.g. when the laptop went missing.
    """
    x509_profile.check_node_id_hex(node_id)
    if not reason or len(reason) > MAX_REASON_LENGTH:
        raise ValueError(f"reason must be 1 to {MAX_REASON_LENGTH} characters")
    issued = utc(now)
    effective = utc(revoked_at) if revoked_at is not None else issued
    if effective > issued:
        raise ValueError("a revocation cannot take effect after the list is issued")
    entries: tuple[RevocationEntry, ...] = ()
    number = 1
    if previous is not None:
        previous.verify(root.certificate)
        if previous.is_revoked(node_id):
            raise ValueError(f"node {node_id} is already revoked")
        entries, number = previous.entries, previous.number + 1
    revocations = _sign(
        root, number, (*entries, RevocationEntry(node_id, effective, reason)), issued
    )
    log.info("revoked node %s from %s in list #%d: %s", node_id, effective, number, reason)
    return revocations
