"""Enrollment by file: a new device asks to join, the admin's device answers with a grant.

1. The new device writes an `EnrollmentRequest` (its Ed25519 node public key, X25519
   exchange public key, requested name, creation time), self-signed by the node key so it
   cannot be altered on the way, and shows its 6-digit `pairing_code`.
2. The admin's device reads the request (USB, file share), computes the same code from it,
   and `admit`s it only if the code the admin reads off the new device matches. That proves
   the request in hand is the one the device in front of the admin made.
3. The `Grant` goes back: node certificate, root certificate, revocation list, and the data
   key wrapped to the device's exchange key. `Grant.accept` checks all of it against the
   root and the device's own keys.

Both objects are canonical JSON (sorted keys, no spaces, ASCII; binary as base64; times
as ``YYYY-MM-DDTHH:MM:SSZ``) with a ``type`` and ``version`` field. The request signature is
Ed25519 over the canonical JSON of every other field. The grant needs no signature of its
own: every part in it verifies to the root certificate it carries.

The pairing code is scrypt (N=2^14, r=8, p=1) of the signed request body, reduced to six
digits. Six digits are 20 bits; the slow hash makes grinding for a substitute request with
the same code cost about 2^20 scrypt runs (hours) instead of seconds.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from simpul.crypto import x509_profile
from simpul.crypto.clock import utc
from simpul.crypto.data_key import DataKey, KeyUnwrapError, unwrap_data_key, wrap_data_key
from simpul.crypto.exchange_key import ExchangeKey
from simpul.crypto.network_root import NetworkRoot
from simpul.crypto.node_certificate import (
    DEFAULT_VALID_DAYS,
    MAX_NAME_LENGTH,
    CertificateRejected,
    NodeCertificate,
    issue_node_certificate,
    verify_node_certificate,
)
from simpul.crypto.node_key import NodeKey, node_id_of, verify_signature
from simpul.crypto.revocation import RevocationList, RevocationListRejected

log = logging.getLogger(__name__)

REQUEST_TYPE = "simpul-enrollment-request"
GRANT_TYPE = "simpul-enrollment-grant"
FORMAT_VERSION = 1
PAIRING_CODE_DIGITS = 6
MAX_DOCUMENT_BYTES = 64 * 1024
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_PAIRING_SALT = b"simpul pairing code v1"
_PUBLIC_KEY_BYTES = 32


class EnrollmentError(Exception):
    """A request or grant that is malformed, tampered with, or refused."""


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _load(data: bytes, doc_type: str, fields: set[str]) -> dict[str, Any]:
    """The JSON object in `data`, checked for type, version and exactly `fields`."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise EnrollmentError(f"{doc_type} is too large")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnrollmentError(f"{doc_type} is not JSON") from exc
    if not isinstance(document, dict) or document.get("type") != doc_type:
        raise EnrollmentError(f"not a {doc_type}")
    if document.get("version") != FORMAT_VERSION:
        raise EnrollmentError(f"unsupported {doc_type} version {document.get('version')!r}")
    if set(document) != fields | {"type", "version"}:
        raise EnrollmentError(f"{doc_type} has unexpected or missing fields")
    return document


def _text(document: dict[str, Any], key: str) -> str:
    value = document[key]
    if not isinstance(value, str):
        raise EnrollmentError(f"field {key} must be a string")
    return value


def _binary(document: dict[str, Any], key: str) -> bytes:
    try:
        return base64.b64decode(_text(document, key), validate=True)
    except binascii.Error as exc:
        raise EnrollmentError(f"field {key} is not base64") from exc


@dataclass(frozen=True)
class EnrollmentRequest:
    """A device's signed request to join a network; construction verifies the signature."""

    node_public_key: bytes
    exchange_public_key: bytes
    name: str
    created_at: datetime
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.node_public_key) != _PUBLIC_KEY_BYTES:
            raise EnrollmentError("node public key must be 32 bytes")
        if len(self.exchange_public_key) != _PUBLIC_KEY_BYTES:
            raise EnrollmentError("exchange public key must be 32 bytes")
        if not self.name or len(self.name) > MAX_NAME_LENGTH:
            raise EnrollmentError(f"requested name must be 1 to {MAX_NAME_LENGTH} characters")
        if not verify_signature(self.node_public_key, self.body(), self.signature):
            raise EnrollmentError("enrollment request signature does not verify (altered?)")

    @classmethod
    def create(
        cls,
        node_key: NodeKey,
        exchange_key: ExchangeKey,
        name: str,
        now: datetime | None = None,
    ) -> EnrollmentRequest:
        fields = (node_key.public_bytes, exchange_key.public_bytes, name, utc(now))
        body = cls._body(*fields)
        return cls(*fields, signature=node_key.sign(body))

    @staticmethod
    def _body(node_public: bytes, exchange_public: bytes, name: str, created: datetime) -> bytes:
        return _canonical(
            {
                "type": REQUEST_TYPE,
                "version": FORMAT_VERSION,
                "node_public_key": _b64(node_public),
                "exchange_public_key": _b64(exchange_public),
                "name": name,
                "created_at": created.strftime(_TIME_FORMAT),
            }
        )

    def body(self) -> bytes:
        """The signed bytes: canonical JSON of every field but the signature."""
        return self._body(
            self.node_public_key, self.exchange_public_key, self.name, self.created_at
        )

    @property
    def node_id(self) -> str:
        return node_id_of(self.node_public_key).hex()

    def to_bytes(self) -> bytes:
        document = json.loads(self.body())
        document["signature"] = _b64(self.signature)
        return _canonical(document)

    @classmethod
    def from_bytes(cls, data: bytes) -> EnrollmentRequest:
        document = _load(
            data,
            REQUEST_TYPE,
            {"node_public_key", "exchange_public_key", "name", "created_at", "signature"},
        )
        try:
            created = datetime.strptime(_text(document, "created_at"), _TIME_FORMAT)
        except ValueError as exc:
            raise EnrollmentError("created_at is not a UTC timestamp") from exc
        return cls(
            node_public_key=_binary(document, "node_public_key"),
            exchange_public_key=_binary(document, "exchange_public_key"),
            name=_text(document, "name"),
            created_at=created.replace(tzinfo=UTC),
            signature=_binary(document, "signature"),
        )


def pairing_code(request: EnrollmentRequest) -> str:
    """The six digits both the new device and the admin's device derive from `request`."""
    digest = Scrypt(salt=_PAIRING_SALT, length=8, n=1 << 14, r=8, p=1).derive(request.body())
    return f"{int.from_bytes(digest, 'big') % 10**PAIRING_CODE_DIGITS:0{PAIRING_CODE_DIGITS}d}"


@dataclass(frozen=True)
class Grant:
    """The admin's answer to a request: everything a device needs to join the network."""

    node_certificate: bytes
    root_certificate: bytes
    revocations: RevocationList
    wrapped_data_key: bytes

    @property
    def network_id(self) -> str:
        return x509_profile.fingerprint(x509_profile.load_certificate(self.root_certificate))

    def to_bytes(self) -> bytes:
        return _canonical(
            {
                "type": GRANT_TYPE,
                "version": FORMAT_VERSION,
                "node_certificate": self.node_certificate.decode("ascii"),
                "root_certificate": self.root_certificate.decode("ascii"),
                "revocations": self.revocations.to_pem().decode("ascii"),
                "wrapped_data_key": _b64(self.wrapped_data_key),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Grant:
        document = _load(
            data,
            GRANT_TYPE,
            {"node_certificate", "root_certificate", "revocations", "wrapped_data_key"},
        )
        try:
            revocations = RevocationList.parse(_text(document, "revocations").encode())
        except RevocationListRejected as exc:
            raise EnrollmentError(str(exc)) from exc
        return cls(
            node_certificate=_text(document, "node_certificate").encode(),
            root_certificate=_text(document, "root_certificate").encode(),
            revocations=revocations,
            wrapped_data_key=_binary(document, "wrapped_data_key"),
        )

    def accept(
        self,
        node_key: NodeKey,
        exchange_key: ExchangeKey,
        *,
        now: datetime | None = None,
        expected_network_id: str | None = None,
    ) -> tuple[NodeCertificate, DataKey]:
        """Verify the grant for this device; its certificate and the network data key."""
        try:
            network_id = self.network_id
            if expected_network_id is not None and network_id != expected_network_id:
                raise EnrollmentError(f"grant is for network {network_id}, not the expected one")
            certificate = verify_node_certificate(
                self.node_certificate, self.root_certificate, now=now, revocations=self.revocations
            )
            if certificate.public_key != node_key.public_bytes:
                raise EnrollmentError("grant certifies another node's key")
            data_key = unwrap_data_key(self.wrapped_data_key, exchange_key, self.root_certificate)
        except (CertificateRejected, RevocationListRejected, KeyUnwrapError, ValueError) as exc:
            raise EnrollmentError(f"grant rejected: {exc}") from exc
        log.info("accepted grant: node %s joins network %s", certificate.node_id, network_id)
        return certificate, data_key


def admit(
    root: NetworkRoot,
    request: EnrollmentRequest,
    *,
    code: str,
    role: str,
    scope: list[str],
    data_key: DataKey,
    revocations: RevocationList,
    name: str | None = None,
    valid_days: int = DEFAULT_VALID_DAYS,
    now: datetime | None = None,
) -> Grant:
    """Certify the requesting device if `code` (read off the device) matches the request."""
    if not hmac.compare_digest(code.strip().encode(), pairing_code(request).encode()):
        raise EnrollmentError("pairing code does not match this request")
    try:
        revocations.verify(root.certificate)
    except RevocationListRejected as exc:
        raise EnrollmentError(str(exc)) from exc
    if revocations.is_revoked(request.node_id):
        raise EnrollmentError(f"node {request.node_id} is revoked and cannot rejoin")
    node_certificate = issue_node_certificate(
        root,
        request.node_public_key,
        name or request.name,
        role,
        scope,
        valid_days=valid_days,
        now=now,
    )
    log.info("admitted node %s to network %s", request.node_id, root.network_id)
    return Grant(
        node_certificate=node_certificate,
        root_certificate=root.cert_pem,
        revocations=revocations,
        wrapped_data_key=wrap_data_key(root, data_key, request.exchange_public_key),
    )
