"""A house photo sealed for a USB drive under the network data key, and its drive name.

A photo file on a drive is::

    "SPF1" | key id 16 | epoch u32 | salt 16 | nonce prefix 7      header (associated data)
    AES-256-GCM segments (crypto/sealed_stream.py) of: SHA-256 of the photo 32 | photo

The file key is HKDF-SHA256(data key, salt, "simpul photo file v1"), fresh per file (one
key seals one stream). The file's name is the first 16 bytes (hex) of
HMAC-SHA256(HKDF(data key, "simpul photo name v1"), SHA-256 of the photo): a node that
holds the data key can tell whether the drive carries a photo it wants, while someone
who finds the drive learns neither the pictures nor which known photo a file is.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from simpul.crypto.sealed_stream import (
    PREFIX_BYTES,
    OpeningReader,
    SealError,
    SealingWriter,
    new_prefix,
)

MAGIC = b"SPF1"
KEY_ID_BYTES = 16
SALT_BYTES = 16
DIGEST_BYTES = 32
NAME_BYTES = 16
_EPOCH = struct.Struct(">I")
HEADER_BYTES = len(MAGIC) + KEY_ID_BYTES + _EPOCH.size + SALT_BYTES + PREFIX_BYTES
FILE_INFO = b"simpul photo file v1"
NAME_INFO = b"simpul photo name v1"


def _derive(secret: bytes, salt: bytes | None, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)


def photo_name(secret: bytes, digest: bytes) -> str:
    """The drive name (hex) of the photo with SHA-256 `digest` under data key `secret`."""
    mac = hmac.HMAC(_derive(secret, None, NAME_INFO), hashes.SHA256())
    mac.update(digest)
    return mac.finalize()[:NAME_BYTES].hex()


def seal_photo(secret: bytes, key_id: bytes, epoch: int, data: bytes) -> bytes:
    """`data` (a photo) sealed under the data key `secret` named by `key_id`, `epoch`."""
    salt = os.urandom(SALT_BYTES)
    prefix = new_prefix()
    header = MAGIC + key_id + _EPOCH.pack(epoch) + salt + prefix
    out = io.BytesIO()
    out.write(header)
    writer = SealingWriter(out, _derive(secret, salt, FILE_INFO), prefix, header)
    writer.write(hashlib.sha256(data).digest() + data)
    writer.close()
    return out.getvalue()


def photo_key_of(blob: bytes) -> tuple[bytes, int]:
    """The (key id, epoch) a sealed photo names; SealError when it is not one."""
    if len(blob) < HEADER_BYTES or not blob.startswith(MAGIC):
        raise SealError("not a sealed photo file")
    start = len(MAGIC)
    key_id = blob[start : start + KEY_ID_BYTES]
    (epoch,) = _EPOCH.unpack_from(blob, start + KEY_ID_BYTES)
    return key_id, epoch


def open_photo(blob: bytes, secret: bytes) -> tuple[bytes, bytes]:
    """The (SHA-256, photo) sealed in `blob`; SealError when it does not open, or when the
    photo does not hash to the digest sealed with it."""
    photo_key_of(blob)
    header = blob[:HEADER_BYTES]
    salt = header[-(SALT_BYTES + PREFIX_BYTES) : -PREFIX_BYTES]
    prefix = header[-PREFIX_BYTES:]
    reader = OpeningReader(
        io.BytesIO(blob[HEADER_BYTES:]), _derive(secret, salt, FILE_INFO), prefix, header
    )
    plain = reader.read()
    digest, data = plain[:DIGEST_BYTES], plain[DIGEST_BYTES:]
    if len(digest) != DIGEST_BYTES or hashlib.sha256(data).digest() != digest:
        raise SealError("the photo does not match the hash sealed with it")
    return digest, data
