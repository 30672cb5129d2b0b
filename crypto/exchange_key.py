"""The node's X25519 exchange key: the address the network data key is wrapped to.

Separate from the Ed25519 identity key (`node_key`) so signing and key agreement never
share a key. Made on first start and kept in a 0600 PEM file beside the node key.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from simpul.crypto.key_file import KeyFile


@dataclass(frozen=True)
class ExchangeKey(KeyFile):
    """An X25519 private key and its raw 32-byte public key."""

    KEY_TYPE = X25519PrivateKey
    ALGORITHM = "X25519"
    LABEL = "exchange key"

    def exchange(self, peer_public: bytes) -> bytes:
        """The X25519 shared secret with a raw peer public key."""
        return self.private_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
