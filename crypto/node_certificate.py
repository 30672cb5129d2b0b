"""Node certificates: the network root vouches for a node's key, name, role and write scope.

A node certificate is X.509 v3, Ed25519, signed by the root key (profile and OIDs in
`x509_profile`): subject CN = display name, serial number = node id, subjectAltName URI
``urn:simpul:node:<node id>``, the non-critical simpulNodeInfo extension (node id, role,
scope), basicConstraints CA=false, and extendedKeyUsage serverAuth + clientAuth so the same
certificate serves both ends of a mutual-TLS session. Validity defaults to two years and
never outlasts the root.

`verify_node_certificate` is the single place that decides whether a peer or an origin is a
member of the network; it raises `CertificateRejected` with a `RejectReason` that callers
log and count.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from simpul.crypto import x509_profile
from simpul.crypto.clock import utc
from simpul.crypto.network_root import CLOCK_SKEW, NetworkRoot
from simpul.crypto.node_key import node_id_of
from simpul.crypto.scope import covers, in_scope, normalise_scope

if TYPE_CHECKING:
    from simpul.crypto.revocation import RevocationList

__all__ = [
    "DEFAULT_VALID_DAYS",
    "ROLES",
    "CertificateRejected",
    "NodeCertificate",
    "RejectReason",
    "in_scope",
    "issue_node_certificate",
    "verify_node_certificate",
]

log = logging.getLogger(__name__)

DEFAULT_VALID_DAYS = 730
ROLES = ("office", "hub")
MAX_NAME_LENGTH = 64


class RejectReason(enum.StrEnum):
    """Why a certificate is not accepted as a member of the network."""

    MALFORMED = "malformed"
    WRONG_ISSUER = "wrong_issuer"
    BAD_SIGNATURE = "bad_signature"
    NODE_ID_MISMATCH = "node_id_mismatch"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    OUTSIDE_NETWORK_SCOPE = "outside_network_scope"
    NO_CERTIFICATE = "no_certificate"
    UNEXPECTED_NODE = "unexpected_node"


class CertificateRejected(Exception):
    """A node certificate failed verification; `reason` says why."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class NodeCertificate:
    """The fields of a node certificate as Simpul reads them (parsed, not yet verified)."""

    certificate: x509.Certificate
    node_id: str
    name: str
    role: str
    scope: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    public_key: bytes
    fingerprint: str

    @classmethod
    def parse(cls, data: bytes | x509.Certificate) -> NodeCertificate:
        """Read a PEM or DER node certificate; CertificateRejected(MALFORMED) if unreadable."""
        try:
            cert = x509_profile.load_certificate(data)
            node_id, role, scope = x509_profile.decode_node_info(
                x509_profile.extension_value(cert.extensions, x509_profile.NODE_INFO_OID)
            )
            return cls(
                certificate=cert,
                node_id=node_id,
                name=x509_profile.common_name(cert.subject),
                role=role,
                scope=scope,
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                public_key=x509_profile.ed25519_public_bytes(cert.public_key()),
                fingerprint=x509_profile.fingerprint(cert),
            )
        except ValueError as exc:
            raise CertificateRejected(RejectReason.MALFORMED, str(exc)) from exc

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def may_write(self, kode_wilayah: str) -> bool:
        """True when this node's write scope covers the region code."""
        return in_scope(self.scope, kode_wilayah)


def issue_node_certificate(
    root: NetworkRoot,
    node_public_key: bytes,
    name: str,
    role: str,
    scope: list[str],
    valid_days: int = DEFAULT_VALID_DAYS,
    now: datetime | None = None,
) -> bytes:
    """Sign a certificate for the node owning `node_public_key` (raw Ed25519); PEM bytes."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"node name must be 1 to {MAX_NAME_LENGTH} characters")
    if valid_days < 1:
        raise ValueError("valid_days must be positive")
    prefixes = normalise_scope(scope)
    if not covers(root.scope, prefixes):
        raise ValueError(f"scope {','.join(prefixes)} is outside the network scope")
    public = Ed25519PublicKey.from_public_bytes(node_public_key)
    node_id = node_id_of(node_public_key).hex()
    start = utc(now)
    end = min(start + timedelta(days=valid_days), root.certificate.not_valid_after_utc)
    root_public = root.private_key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
        .issuer_name(root.certificate.subject)
        .public_key(public)
        .serial_number(x509_profile.node_id_to_serial(node_id))
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(x509_profile.NODE_URI_PREFIX + node_id)]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_public), critical=False
        )
        .add_extension(
            x509.UnrecognizedExtension(
                x509_profile.NODE_INFO_OID,
                x509_profile.encode_node_info(node_id, role, prefixes),
            ),
            critical=False,
        )
        .sign(root.private_key, None)
    )
    log.info("issued certificate for node %s (%s, %s) until %s", node_id, name, role, end)
    return cert.public_bytes(serialization.Encoding.PEM)


def _san_node_ids(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        uri.removeprefix(x509_profile.NODE_URI_PREFIX)
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(x509_profile.NODE_URI_PREFIX)
    ]


def _check_identity(node: NodeCertificate) -> None:
    cert = node.certificate
    derived = node_id_of(node.public_key).hex()
    if node.node_id != derived:
        raise CertificateRejected(
            RejectReason.NODE_ID_MISMATCH,
            f"certificate names node {node.node_id} but its key is node {derived}",
        )
    if cert.serial_number != x509_profile.node_id_to_serial(derived):
        raise CertificateRejected(RejectReason.NODE_ID_MISMATCH, "serial number is not the node id")
    if _san_node_ids(cert) != [derived]:
        raise CertificateRejected(
            RejectReason.NODE_ID_MISMATCH, "subjectAltName does not name exactly this node"
        )
    if node.role not in ROLES:
        raise CertificateRejected(RejectReason.MALFORMED, f"unknown role {node.role!r}")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or constraints.ca:
        raise CertificateRejected(RejectReason.MALFORMED, "not an end-entity certificate")


def verify_node_certificate(
    cert: bytes | x509.Certificate | NodeCertificate,
    root_cert: bytes | x509.Certificate,
    *,
    now: datetime | None = None,
    revocations: RevocationList | None = None,
) -> NodeCertificate:
    """Check that `cert` is a current member of the network of `root_cert` at time `now`.

    Order: structure, issuer, signature, node identity, validity period, revocation (a
    node revoked at or before `now`; `revocations` is verified against the root here),
    scope inside the network. Raises CertificateRejected with the first failing reason.
    """
    node = cert if isinstance(cert, NodeCertificate) else NodeCertificate.parse(cert)
    root = x509_profile.load_certificate(root_cert)
    moment = utc(now)
    if node.certificate.issuer != root.subject:
        raise CertificateRejected(
            RejectReason.WRONG_ISSUER,
            f"issued by {node.certificate.issuer.rfc4514_string()!r}, "
            f"not by this network's root {root.subject.rfc4514_string()!r}",
        )
    try:
        node.certificate.verify_directly_issued_by(root)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise CertificateRejected(
            RejectReason.BAD_SIGNATURE, "signature does not verify with this network's root"
        ) from exc
    _check_identity(node)
    if moment < node.not_before:
        raise CertificateRejected(
            RejectReason.NOT_YET_VALID, f"valid from {node.not_before.isoformat()}"
        )
    if moment > node.not_after:
        raise CertificateRejected(RejectReason.EXPIRED, f"expired {node.not_after.isoformat()}")
    if revocations is not None:
        revocations.verify(root)
        if revocations.is_revoked(node.node_id, at=moment):
            raise CertificateRejected(
                RejectReason.REVOKED,
                f"node {node.node_id} revoked in revocation list #{revocations.number}",
            )
    if not covers(x509_profile.network_scope(root), node.scope):
        raise CertificateRejected(
            RejectReason.OUTSIDE_NETWORK_SCOPE, f"scope {','.join(node.scope)} exceeds network"
        )
    return node
