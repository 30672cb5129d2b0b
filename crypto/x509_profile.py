"""Simpul's X.509 profile: private OIDs, the custom extensions, and certificate helpers.

Private OID arc: ``1.3.6.1.4.1.58479`` (an IANA Private Enterprise Number placeholder,
not yet registered for Simpul: register one before the first production network and
replace it here, since certificates already issued keep the OID they were made with).

* ``1.3.6.1.4.1.58479.1.1`` **simpulNodeInfo**, non-critical, in node certificates::

      SimpulNodeInfo ::= SEQUENCE {
          nodeId  OCTET STRING (SIZE (16)),   -- first 16 bytes of SHA-256(raw public key)
          role    UTF8String,                 -- "office" | "hub"
          scope   SEQUENCE OF NumericString } -- region-code prefixes

* ``1.3.6.1.4.1.58479.1.2`` **simpulNetworkInfo**, non-critical, in the root certificate::

      SimpulNetworkInfo ::= SEQUENCE { scope SEQUENCE OF NumericString }

* ``1.3.6.1.4.1.58479.1.3`` **simpulRevocationReason**, non-critical CRL entry extension:
  a UTF8String with the admin's free-text reason.

A node certificate also names its node id twice more: the certificate serial number is the
node id read as a big-endian integer (so a CRL revokes a node, every certificate it was ever
given, and OpenSSL refuses it in the TLS handshake) and the subjectAltName holds the URI
``urn:simpul:node:<node id hex>``. The display name is the subject CN. The network id is the
SHA-256 fingerprint of the root certificate's DER, as hex.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from simpul.crypto import der
from simpul.crypto.scope import normalise_scope

SIMPUL_OID_ARC = "1.3.6.1.4.1.58479"
NODE_INFO_OID = x509.ObjectIdentifier(f"{SIMPUL_OID_ARC}.1.1")
NETWORK_INFO_OID = x509.ObjectIdentifier(f"{SIMPUL_OID_ARC}.1.2")
REVOCATION_REASON_OID = x509.ObjectIdentifier(f"{SIMPUL_OID_ARC}.1.3")

NODE_URI_PREFIX = "urn:simpul:node:"
NODE_ID_HEX_LENGTH = 32


class ProfileError(ValueError):
    """A certificate, CRL or extension that does not follow Simpul's profile."""


def load_certificate(data: bytes | x509.Certificate) -> x509.Certificate:
    """A certificate from PEM or DER bytes (or one already loaded)."""
    if isinstance(data, x509.Certificate):
        return data
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ProfileError(f"not a readable X.509 certificate: {exc}") from exc


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 over the certificate's DER, as hex (for a root certificate: the network id)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def ed25519_public_bytes(key: object) -> bytes:
    """The raw 32 bytes of an Ed25519 public key; ProfileError for any other key type."""
    if not isinstance(key, Ed25519PublicKey):
        raise ProfileError("key is not Ed25519")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def check_node_id_hex(node_id: str) -> str:
    """`node_id` if it is 32 lowercase hex characters, else ValueError."""
    if (
        not isinstance(node_id, str)
        or len(node_id) != NODE_ID_HEX_LENGTH
        or any(c not in "0123456789abcdef" for c in node_id)
    ):
        raise ValueError(f"node id must be {NODE_ID_HEX_LENGTH} lowercase hex characters")
    return node_id


def node_id_to_serial(node_id: str) -> int:
    """The X.509 serial number that stands for `node_id`."""
    return int(check_node_id_hex(node_id), 16)


def serial_to_node_id(serial: int) -> str:
    if not 0 < serial < 1 << (4 * NODE_ID_HEX_LENGTH):
        raise ProfileError("serial number is not a node id")
    return f"{serial:0{NODE_ID_HEX_LENGTH}x}"


def extension_value(extensions: x509.Extensions, oid: x509.ObjectIdentifier) -> bytes:
    """The raw DER value of a private extension; ProfileError if it is absent."""
    try:
        ext = extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound as exc:
        raise ProfileError(f"missing extension {oid.dotted_string}") from exc
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise ProfileError(f"extension {oid.dotted_string} has an unexpected type")
    return ext.value.value


def _encode_scope(scope: Iterable[str]) -> bytes:
    return der.sequence(
        *(der.encode(der.NUMERIC_STRING, p.encode()) for p in normalise_scope(scope))
    )


def _decode_scope(reader: der.DerReader) -> tuple[str, ...]:
    items = reader.read_sequence()
    prefixes = []
    while not items.at_end():
        prefixes.append(items.read_text(der.NUMERIC_STRING))
    scope = normalise_scope(prefixes)
    if list(scope) != prefixes:
        raise ProfileError("scope is not in canonical order")
    return scope


def encode_node_info(node_id: str, role: str, scope: Iterable[str]) -> bytes:
    return der.sequence(
        der.encode(der.OCTET_STRING, bytes.fromhex(check_node_id_hex(node_id))),
        der.encode(der.UTF8_STRING, role.encode()),
        _encode_scope(scope),
    )


def decode_node_info(value: bytes) -> tuple[str, str, tuple[str, ...]]:
    """(node id hex, role, scope) from a simpulNodeInfo value."""
    try:
        outer = der.DerReader(value)
        info = outer.read_sequence()
        outer.finish()
        node_id = info.read(der.OCTET_STRING)
        role = info.read_text(der.UTF8_STRING)
        scope = _decode_scope(info)
        info.finish()
    except ValueError as exc:
        raise ProfileError(f"malformed simpulNodeInfo: {exc}") from exc
    if len(node_id) * 2 != NODE_ID_HEX_LENGTH:
        raise ProfileError("simpulNodeInfo node id has the wrong length")
    return node_id.hex(), role, scope


def encode_network_info(scope: Iterable[str]) -> bytes:
    return der.sequence(_encode_scope(scope))


def decode_network_info(value: bytes) -> tuple[str, ...]:
    try:
        outer = der.DerReader(value)
        info = outer.read_sequence()
        outer.finish()
        scope = _decode_scope(info)
        info.finish()
    except ValueError as exc:
        raise ProfileError(f"malformed simpulNetworkInfo: {exc}") from exc
    return scope


def encode_text(text: str) -> bytes:
    return der.encode(der.UTF8_STRING, text.encode())


def decode_text(value: bytes) -> str:
    try:
        reader = der.DerReader(value)
        text = reader.read_text(der.UTF8_STRING)
        reader.finish()
    except ValueError as exc:
        raise ProfileError(f"malformed text extension: {exc}") from exc
    return text


def network_scope(root_cert: x509.Certificate) -> tuple[str, ...]:
    """The write scope of the whole network, from its root certificate."""
    return decode_network_info(extension_value(root_cert.extensions, NETWORK_INFO_OID))


def common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if len(attrs) != 1 or not isinstance(attrs[0].value, str):
        raise ProfileError("name must hold exactly one common name")
    return attrs[0].value
