"""The network root: the Ed25519 key and self-signed X.509 certificate that define a network.

Whoever holds the root key admits nodes, revokes them and rotates the data key, so the key
exists in clear only in memory. On disk it is one file holding the root certificate (PEM)
followed by the root key encrypted under the admin's passphrase::

    -----BEGIN SIMPUL ENCRYPTED ROOT KEY-----
    base64( "SRK1" | log2(N) u8 | r u8 | p u8 | salt 16 | nonce 12 | AES-256-GCM(raw key) )
    -----END SIMPUL ENCRYPTED ROOT KEY-----

The AES key is scrypt(passphrase, salt, N, r, p) (`crypto/passphrase_key.py`, shared with
backups); the header (magic through nonce) is the associated data. scrypt at N=2^17
costs ~0.4 s and 128 MiB per attempt, far more than the
PBKDF2-2048 that PKCS#8 `BestAvailableEncryption` uses, which matters for a key guarded
only by a passphrase on a flash drive. The file is written 0600 and atomically.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from simpul.crypto import x509_profile
from simpul.crypto.clock import utc
from simpul.crypto.node_key import write_private_file
from simpul.crypto.passphrase_key import (
    DEFAULT_LOG2_N,
    MAX_LOG2_N,
    MIN_LOG2_N,
    PassphraseKey,
    PassphraseKeyError,
)
from simpul.crypto.scope import normalise_scope

log = logging.getLogger(__name__)

ROOT_VALIDITY = timedelta(days=20 * 365 + 5)
CLOCK_SKEW = timedelta(hours=1)
"""Certificates start this long before their issue time: office clocks drift."""

_KEY_MAGIC = b"SRK1"
_NONCE_BYTES = 12
_KEY_PEM_LABEL = "SIMPUL ENCRYPTED ROOT KEY"
_KEY_PEM = re.compile(
    rb"-----BEGIN "
    + _KEY_PEM_LABEL.encode()
    + rb"-----\s*(.+?)\s*-----END "
    + _KEY_PEM_LABEL.encode()
    + rb"-----",
    re.DOTALL,
)
DEFAULT_SCRYPT_LOG2_N = DEFAULT_LOG2_N
_RAW_KEY_BYTES = 32


class RootKeyError(Exception):
    """A network root file is missing, malformed or does not match its certificate."""


class WrongPassphrase(RootKeyError):
    """The passphrase does not decrypt the root key."""


def _aes_key(passphrase: str, how: PassphraseKey) -> bytes:
    if not passphrase:
        raise RootKeyError("the root key passphrase must not be empty")
    return how.derive(passphrase)


def _encrypt_key(key: Ed25519PrivateKey, passphrase: str, log2_n: int) -> bytes:
    how = PassphraseKey.new(_KEY_MAGIC, log2_n)
    header = how.pack() + os.urandom(_NONCE_BYTES)
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    sealed = AESGCM(_aes_key(passphrase, how)).encrypt(header[-_NONCE_BYTES:], raw, header)
    return header + sealed


def _decrypt_key(blob: bytes, passphrase: str) -> Ed25519PrivateKey:
    header_size = PassphraseKey.SIZE + _NONCE_BYTES
    if len(blob) != header_size + _RAW_KEY_BYTES + 16:
        raise RootKeyError("encrypted root key has the wrong length")
    header = blob[:header_size]
    try:
        how = PassphraseKey.unpack(header, _KEY_MAGIC)
    except PassphraseKeyError as exc:
        raise RootKeyError(f"encrypted root key: {exc}") from exc
    try:
        raw = AESGCM(_aes_key(passphrase, how)).decrypt(
            header[-_NONCE_BYTES:], blob[header_size:], header
        )
    except InvalidTag as exc:
        raise WrongPassphrase("wrong passphrase for the network root key") from exc
    return Ed25519PrivateKey.from_private_bytes(raw)


def _armor(blob: bytes) -> bytes:
    body = base64.b64encode(blob)
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    label = _KEY_PEM_LABEL.encode()
    return b"\n".join(
        [b"-----BEGIN " + label + b"-----", *lines, b"-----END " + label + b"-----\n"]
    )


@dataclass(frozen=True)
class NetworkRoot:
    """The root key and certificate of one network (only the admin's device holds this)."""

    private_key: Ed25519PrivateKey
    certificate: x509.Certificate

    def __post_init__(self) -> None:
        ours = x509_profile.ed25519_public_bytes(self.private_key.public_key())
        try:
            matches = x509_profile.ed25519_public_bytes(self.certificate.public_key()) == ours
        except x509_profile.ProfileError:
            matches = False
        if not matches:
            raise RootKeyError("root key does not match the root certificate")

    @property
    def network_id(self) -> str:
        """SHA-256 fingerprint of the root certificate DER, hex."""
        return x509_profile.fingerprint(self.certificate)

    @property
    def name(self) -> str:
        return x509_profile.common_name(self.certificate.subject)

    @property
    def scope(self) -> tuple[str, ...]:
        return x509_profile.network_scope(self.certificate)

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def to_file_bytes(
        self, passphrase: str, *, scrypt_log2_n: int = DEFAULT_SCRYPT_LOG2_N
    ) -> bytes:
        """The one-file export: root certificate PEM, then the passphrase-encrypted key."""
        if not MIN_LOG2_N <= scrypt_log2_n <= MAX_LOG2_N:
            raise ValueError("scrypt work factor out of range")
        return self.cert_pem + _armor(_encrypt_key(self.private_key, passphrase, scrypt_log2_n))

    @classmethod
    def from_file_bytes(cls, data: bytes, passphrase: str) -> NetworkRoot:
        """Read a one-file export; WrongPassphrase or RootKeyError on failure."""
        match = _KEY_PEM.search(data)
        if match is None:
            raise RootKeyError("no encrypted root key in the network root file")
        try:
            blob = base64.b64decode(b"".join(match.group(1).split()), validate=True)
        except ValueError as exc:
            raise RootKeyError("encrypted root key is not valid base64") from exc
        try:
            certificate = x509_profile.load_certificate(data[: match.start()])
        except ValueError as exc:
            raise RootKeyError(f"network root file has no readable certificate: {exc}") from exc
        return cls(_decrypt_key(blob, passphrase), certificate)

    def save(
        self, path: Path, passphrase: str, *, scrypt_log2_n: int = DEFAULT_SCRYPT_LOG2_N
    ) -> None:
        """Write the one-file export to `path` (0600, atomic)."""
        write_private_file(path, self.to_file_bytes(passphrase, scrypt_log2_n=scrypt_log2_n))
        log.info("saved network root %s to %s", self.network_id, path)

    @classmethod
    def load(cls, path: Path, passphrase: str) -> NetworkRoot:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RootKeyError(f"cannot read network root file {path}: {exc.strerror}") from exc
        return cls.from_file_bytes(data, passphrase)


def create_network(name: str, scope: list[str], now: datetime | None = None) -> NetworkRoot:
    """A new network: fresh Ed25519 root key and a ~20-year self-signed CA certificate."""
    if not name or len(name) > 64:
        raise ValueError("network name must be 1 to 64 characters")
    scope_prefixes = normalise_scope(scope)
    if not scope_prefixes:
        raise ValueError("a network needs a non-empty write scope")
    key = Ed25519PrivateKey.generate()
    start = utc(now)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(start + ROOT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(
                x509_profile.NETWORK_INFO_OID, x509_profile.encode_network_info(scope_prefixes)
            ),
            critical=False,
        )
        .sign(key, None)
    )
    root = NetworkRoot(key, cert)
    log.info("created network %r (%s), scope %s", name, root.network_id, ",".join(scope_prefixes))
    return root
