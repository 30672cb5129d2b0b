"""The node's own Ed25519 identity key: made on first start, kept 0600, signs checkpoints.

The node id is the first 16 bytes of SHA-256 over the raw public key, written as 32 hex
characters; the same 16 bytes are the node's Automerge actor id. Creating or joining a
network later certifies this same key, so nothing a node signed before is re-signed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from simpul.crypto.key_file import KeyFile, KeyFileError, write_private_file

__all__ = ["KeyFileError", "NodeKey", "node_id_of", "verify_signature", "write_private_file"]

NODE_ID_BYTES = 16


def node_id_of(public_key: bytes) -> bytes:
    """The 16-byte node id of a raw Ed25519 public key."""
    return hashlib.sha256(public_key).digest()[:NODE_ID_BYTES]


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `message` by `public_key`."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class NodeKey(KeyFile):
    """An Ed25519 private key with its derived public key and node id."""

    KEY_TYPE = Ed25519PrivateKey
    ALGORITHM = "Ed25519"
    LABEL = "node key"

    @property
    def node_id(self) -> bytes:
        return node_id_of(self.public_bytes)

    @property
    def node_id_hex(self) -> str:
        return self.node_id.hex()

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)
