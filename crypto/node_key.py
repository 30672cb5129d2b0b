"""The node's own Ed25519 identity key: made on first start, kept 0600, signs checkpoints.

The node id is the first 16 bytes of SHA-256 over the raw public key, written as 32 hex
characters; the same 16 bytes are the node's Automerge actor id. Creating or joining a
network later certifies this same key, so nothing a node signed before is re-signed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

NODE_ID_BYTES = 16
KEY_FILE_MODE = 0o600


class KeyFileError(Exception):
    """A key file is missing, unreadable, of the wrong kind, or too widely readable."""


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


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` to a new 0600 file atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_FILE_MODE)
    try:
        os.fchmod(fd, KEY_FILE_MODE)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass(frozen=True)
class NodeKey:
    """An Ed25519 private key with its derived public key and node id."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> NodeKey:
        """Load the key at `path`, or make and store a new one there (0600)."""
        if path.exists():
            return cls.load(path)
        key = cls.generate()
        write_private_file(path, key.private_pem())
        return key

    @classmethod
    def load(cls, path: Path) -> NodeKey:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot read node key {path}: {exc.strerror}") from exc
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"node key {path} is not a readable PEM private key") from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyFileError(f"node key {path} is not an Ed25519 key")
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

    @property
    def node_id(self) -> bytes:
        return node_id_of(self.public_bytes)

    @property
    def node_id_hex(self) -> str:
        return self.node_id.hex()

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)
