"""AES-256 keys derived from a passphrase with scrypt, and the header that carries how.

Every passphrase-protected file Simpul writes (the network root key, backups) starts with
the same header, which is also the AES-GCM associated data of what follows::

    magic 4 | log2(N) u8 | r u8 | p u8 | salt 16

The key is scrypt(passphrase, salt, N, r, p), 32 bytes. The magic names the file kind, so a
backup can never be mistaken for a root key file or the other way round.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

DEFAULT_LOG2_N = 17  # ~0.4 s and 128 MiB per guess on an office PC
MIN_LOG2_N = 14
MAX_LOG2_N = 22
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
_HEADER = struct.Struct(">4sBBB16s")


class PassphraseKeyError(ValueError):
    """A header that is not of the expected kind, or unsupported scrypt parameters."""


@dataclass(frozen=True)
class PassphraseKey:
    """How a file's AES key is derived from its passphrase (magic, work factor, salt)."""

    magic: bytes
    log2_n: int
    salt: bytes

    SIZE = _HEADER.size

    @classmethod
    def new(cls, magic: bytes, log2_n: int = DEFAULT_LOG2_N) -> PassphraseKey:
        if not MIN_LOG2_N <= log2_n <= MAX_LOG2_N:
            raise ValueError("scrypt work factor out of range")
        return cls(magic, log2_n, os.urandom(SALT_BYTES))

    @classmethod
    def unpack(cls, data: bytes, magic: bytes) -> PassphraseKey:
        """The header at the start of `data`; PassphraseKeyError when it is not `magic`'s."""
        if len(data) < _HEADER.size:
            raise PassphraseKeyError("too short for a passphrase header")
        found, log2_n, r, p, salt = _HEADER.unpack_from(data)
        if found != magic or not MIN_LOG2_N <= log2_n <= MAX_LOG2_N:
            raise PassphraseKeyError("unknown format or scrypt parameters")
        if (r, p) != (SCRYPT_R, SCRYPT_P):
            raise PassphraseKeyError("unsupported scrypt parameters")
        return cls(found, log2_n, salt)

    def pack(self) -> bytes:
        return _HEADER.pack(self.magic, self.log2_n, SCRYPT_R, SCRYPT_P, self.salt)

    def derive(self, passphrase: str) -> bytes:
        """The 32-byte AES key; ValueError for an empty passphrase."""
        if not passphrase:
            raise ValueError("the passphrase must not be empty")
        kdf = Scrypt(salt=self.salt, length=KEY_BYTES, n=1 << self.log2_n, r=SCRYPT_R, p=SCRYPT_P)
        return kdf.derive(passphrase.encode("utf-8"))
