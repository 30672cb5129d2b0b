"""Private key files: atomic 0600 writes, and one loader for every kind of key a node keeps.

`KeyFile` is the shared shape of the node's Ed25519 identity key and its X25519
exchange key: generate, load, load-or-create (0600 PEM), raw public bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from cryptography.hazmat.primitives import serialization

KEY_FILE_MODE = 0o600


class KeyFileError(Exception):
    """A key file is missing, unreadable, of the wrong kind, or too widely readable."""


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
class KeyFile:
    """A private key kept in a 0600 PEM file; subclasses name the key type."""

    private_key: Any
    KEY_TYPE: ClassVar[type]
    ALGORITHM: ClassVar[str]
    LABEL: ClassVar[str]

    @classmethod
    def generate(cls) -> Self:
        return cls(cls.KEY_TYPE.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> Self:
        """Load the key at `path`, or make and store a new one there (0600)."""
        if path.exists():
            return cls.load(path)
        key = cls.generate()
        write_private_file(path, key.private_pem())
        return key

    @classmethod
    def load(cls, path: Path) -> Self:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot read {cls.LABEL} {path}: {exc.strerror}") from exc
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{cls.LABEL} {path} is not a readable PEM private key") from exc
        if not isinstance(private, cls.KEY_TYPE):
            raise KeyFileError(f"{cls.LABEL} {path} is not an {cls.ALGORITHM} key")
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
