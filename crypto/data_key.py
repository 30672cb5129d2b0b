"""The network data key, and how the root hands it to each node (wrapped, signed).

A `DataKey` is 32 random bytes with a random key id and an epoch number; USB bundles are
encrypted under it. After a revocation the admin rotates: `rotate_data_key` draws a fresh
random key with epoch+1, not derived from the old one, and wraps it to every remaining
node separately, so a revoked node that kept the old key learns nothing about the new one.

Wrapped key format (binary, 244 bytes)::

    "SDK1" | network id 32 | key id 16 | epoch u32 BE | recipient X25519 public 32
           | ephemeral X25519 public 32 | nonce 12 | AES-256-GCM(key) 48 | Ed25519 sig 64

The AES key is HKDF-SHA256(X25519(ephemeral, recipient), info = "simpul data key wrap v1"
| ephemeral public | recipient public). Everything before the ciphertext is the associated
data, binding network, key id, epoch and recipient. The root signs everything before the
signature: anyone can encrypt to a node's public exchange key, so without the signature a
stranger could plant a key of their choosing and read the USB bundles written under it.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from simpul.crypto import x509_profile
from simpul.crypto.exchange_key import ExchangeKey
from simpul.crypto.network_root import NetworkRoot

log = logging.getLogger(__name__)

DATA_KEY_BYTES = 32
KEY_ID_BYTES = 16
_MAGIC = b"SDK1"
_HEADER = struct.Struct(">4s32s16sI32s32s12s")
_CIPHERTEXT_BYTES = DATA_KEY_BYTES + 16
_SIGNATURE_BYTES = 64
WRAPPED_KEY_BYTES = _HEADER.size + _CIPHERTEXT_BYTES + _SIGNATURE_BYTES
_HKDF_INFO = b"simpul data key wrap v1"


class KeyUnwrapError(Exception):
    """A wrapped data key that is malformed, not for us, not from our root, or tampered."""


@dataclass(frozen=True)
class DataKey:
    """A network data key: `secret` encrypts bundles; `key_id` and `epoch` name it."""

    key_id: str
    epoch: int
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != DATA_KEY_BYTES:
            raise ValueError(f"data key must be {DATA_KEY_BYTES} bytes")
        if len(bytes.fromhex(self.key_id)) != KEY_ID_BYTES:
            raise ValueError(f"key id must be {KEY_ID_BYTES} bytes of hex")
        if not 0 < self.epoch < 1 << 32:
            raise ValueError("epoch must be a positive 32-bit number")

    @classmethod
    def generate(cls, epoch: int = 1) -> DataKey:
        """A fresh random key (the first one of a network has epoch 1)."""
        return cls(os.urandom(KEY_ID_BYTES).hex(), epoch, os.urandom(DATA_KEY_BYTES))


def rotate_data_key(previous: DataKey) -> DataKey:
    """The next epoch's key: fresh randomness, independent of `previous`."""
    key = DataKey.generate(previous.epoch + 1)
    log.info("rotated data key to epoch %d (%s)", key.epoch, key.key_id)
    return key


def _wrapping_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=_HKDF_INFO + ephemeral_public + recipient_public,
    ).derive(shared)


def wrap_data_key(root: NetworkRoot, data_key: DataKey, recipient_public: bytes) -> bytes:
    """`data_key` encrypted to one node's raw X25519 public key and signed by the root."""
    ephemeral = ExchangeKey(X25519PrivateKey.generate())
    shared = ephemeral.exchange(recipient_public)
    nonce = os.urandom(12)
    header = _HEADER.pack(
        _MAGIC,
        bytes.fromhex(root.network_id),
        bytes.fromhex(data_key.key_id),
        data_key.epoch,
        recipient_public,
        ephemeral.public_bytes,
        nonce,
    )
    aead = AESGCM(_wrapping_key(shared, ephemeral.public_bytes, recipient_public))
    signed = header + aead.encrypt(nonce, data_key.secret, header)
    return signed + root.private_key.sign(signed)


@dataclass(frozen=True)
class WrappedKey:
    """What a wrapped data key says about itself, once its root signature verified."""

    key_id: str
    epoch: int
    recipient: bytes  # the recipient node's X25519 public key


def check_wrapped_key(blob: bytes, root_cert: bytes | x509.Certificate) -> WrappedKey:
    """The facts of `blob` after checking its length, network and root signature (anyone
    may check this; only the recipient can decrypt). Raises KeyUnwrapError."""
    if len(blob) != WRAPPED_KEY_BYTES:
        raise KeyUnwrapError("wrapped data key has the wrong length")
    magic, network_id, key_id, epoch, recipient, _, _ = _HEADER.unpack(blob[: _HEADER.size])
    if magic != _MAGIC:
        raise KeyUnwrapError("not a Simpul wrapped data key")
    root = x509_profile.load_certificate(root_cert)
    if network_id.hex() != x509_profile.fingerprint(root):
        raise KeyUnwrapError("wrapped data key belongs to another network")
    root_public = root.public_key()
    if not isinstance(root_public, Ed25519PublicKey):
        raise KeyUnwrapError("root certificate does not hold an Ed25519 key")
    try:
        root_public.verify(blob[-_SIGNATURE_BYTES:], blob[:-_SIGNATURE_BYTES])
    except InvalidSignature as exc:
        raise KeyUnwrapError("wrapped data key is not signed by the network root") from exc
    return WrappedKey(key_id.hex(), epoch, recipient)


def unwrap_data_key(
    blob: bytes, exchange_key: ExchangeKey, root_cert: bytes | x509.Certificate
) -> DataKey:
    """The data key in `blob`, after checking root signature, network and recipient."""
    facts = check_wrapped_key(blob, root_cert)
    if facts.recipient != exchange_key.public_bytes:
        raise KeyUnwrapError("wrapped data key is addressed to another node")
    header = blob[: _HEADER.size]
    *_, ephemeral_public, nonce = _HEADER.unpack(header)
    try:
        shared = exchange_key.exchange(ephemeral_public)
        aead = AESGCM(_wrapping_key(shared, ephemeral_public, facts.recipient))
        secret = aead.decrypt(nonce, blob[_HEADER.size : -_SIGNATURE_BYTES], header)
        return DataKey(facts.key_id, facts.epoch, secret)
    except (InvalidTag, ValueError) as exc:
        raise KeyUnwrapError("wrapped data key does not decrypt") from exc
