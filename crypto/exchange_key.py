"""The node's X25519 exchange key: the address the network data key is wrapped to.

Separate from the Ed25519 identity key (`node_key`) so signing and key agreement never
share a key. Made on first start and kept in a 0600 PEM file beside the node key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from simpul.crypto.node_key import KeyFileError, write_private_file


@dataclass(frozen=True)
class ExchangeKey:
    """An X25519 private key and its raw 32-byte public key."""

    private_key: X25519PrivateKey

    @classmethod
    def generate(cls) -> ExchangeKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> ExchangeKey:
        """Load the key at `path`, or make and store a new one there (0600)."""
        if path.exists():
            return cls.load(path)
        key = cls.generate()
        write_private_file(path, key.private_pem())
        return key

    @classmethod
    def load(cls, path: Path) -> ExchangeKey:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot read exchange key {path}: {exc.strerror}") from exc
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"exchange key {path} is not a readable PEM private key") from exc
        if not isinstance(private, X25519PrivateKey):
            raise KeyFileError(f"exchange key {path} is not an X25519 key")
        return cls(private)

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_bytes(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def exchange(self, peer_public: bytes) -> bytes:
        """The X25519 shared secret with a raw peer public key."""
        return self.private_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
