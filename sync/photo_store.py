"""Content-addressed photo bytes in the node's data dir: one file per SHA-256, written once.

A photo (or thumbnail) lives at `photos/<first two hex>/<sha256 hex>`; its name is its
hash, so the same photo added twice or fetched from two peers is stored once, and any
copy can be checked against its name. Writes go to `photos/tmp/` first, are fsynced and
renamed into place, and the directory is fsynced: a crash or a full disk leaves either
the whole file or none (a stray temp file is swept at the next start). A download that
stops half-way keeps its prefix as `tmp/<hash>.part`, so the next session asks only for
the rest; a finished download whose hash differs is thrown away.

Plain files, not SQLite rows: photos would multiply the database and its WAL, and every
backup and sync of records would drag them along.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from simpul.sync.database import DiskFull

log = logging.getLogger(__name__)

PHOTO_DIR = "photos"
TMP = "tmp"
DAMAGED = "damaged"  # files that failed their hash check, kept aside for a look
PART = ".part"
_HASH_RE = re.compile(r"[0-9a-f]{64}")
READ_CHUNK = 1024 * 1024


class PhotoMismatch(Exception):
    """Bytes whose SHA-256 is not the hash they were offered under: refused."""


def is_hash(value: object) -> bool:
    return isinstance(value, str) and _HASH_RE.fullmatch(value) is not None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PhotoStore:
    """The photo files of one data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / PHOTO_DIR
        self.tmp = self.root / TMP
        # hashes seen on disk: asking what is missing checks each referenced file, and a
        # stat per file per sync adds up (files only go through remove and set_aside)
        self._seen: set[str] = set()

    def open(self) -> None:
        """Create the folders and sweep temp files a crash left (not partial downloads)."""
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stray in self.tmp.iterdir():
            if not stray.name.endswith(PART):
                stray.unlink(missing_ok=True)

    def path(self, digest: str) -> Path:
        if not is_hash(digest):
            raise ValueError(f"not a photo hash: {digest!r}")
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        if digest in self._seen:
            return True
        if is_hash(digest) and self.path(digest).is_file():
            self._seen.add(digest)
            return True
        return False

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def put(self, data: bytes, expected: str | None = None) -> str:
        """Store `data` (if not held yet) and return its hash. PhotoMismatch when it is not
        `expected`; DiskFull when the disk filled up (nothing is left behind then)."""
        digest = sha256_hex(data)
        if expected is not None and digest != expected:
            raise PhotoMismatch(f"bytes hash to {digest[:16]}…, offered as {expected[:16]}…")
        if self.has(digest):
            return digest
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = self.tmp / f"{digest}.{os.getpid()}.new"
        try:
            with open(temp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            self._place(temp, digest)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"disk full while storing photo {digest[:16]}…") from exc
            raise
        return digest

    def _place(self, temp: Path, digest: str) -> None:
        final = self.path(digest)
        final.parent.mkdir(exist_ok=True, mode=0o700)
        os.replace(temp, final)
        _fsync_dir(final.parent)

    # ----- resumable downloads -----------------------------------------------------------

    def partial(self, digest: str) -> Path:
        self.path(digest)  # validates the hash
        return self.tmp / f"{digest}{PART}"

    def partial_size(self, digest: str) -> int:
        part = self.partial(digest)
        return part.stat().st_size if part.exists() else 0

    def append_partial(self, digest: str, data: bytes) -> None:
        """Add downloaded bytes to the partial file (fsynced: a resume trusts its length)."""
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            with open(self.partial(digest), "ab") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"disk full while fetching photo {digest[:16]}…") from exc
            raise

    def finish_partial(self, digest: str) -> None:
        """Move a complete download into place; PhotoMismatch (and the prefix dropped) when
        its bytes do not hash to `digest`."""
        part = self.partial(digest)
        hasher = hashlib.sha256()
        with open(part, "rb") as src:
            while block := src.read(READ_CHUNK):
                hasher.update(block)
        if hasher.hexdigest() != digest:
            part.unlink(missing_ok=True)
            raise PhotoMismatch(f"download of {digest[:16]}… hashes to {hasher.hexdigest()[:16]}…")
        self._place(part, digest)

    def drop_partial(self, digest: str) -> None:
        self.partial(digest).unlink(missing_ok=True)

    # ----- whole store -------------------------------------------------------------------

    def held(self) -> Iterator[str]:
        """Every stored hash."""
        if not self.root.is_dir():
            return
        for shard in self.root.iterdir():
            if shard.name in (TMP, DAMAGED) or not shard.is_dir():
                continue
            for item in shard.iterdir():
                if is_hash(item.name):
                    yield item.name

    def remove(self, digest: str) -> None:
        self._seen.discard(digest)
        self.path(digest).unlink(missing_ok=True)

    def check(self, digest: str) -> bool:
        """Whether the stored file still hashes to its name."""
        hasher = hashlib.sha256()
        with open(self.path(digest), "rb") as src:
            while block := src.read(READ_CHUNK):
                hasher.update(block)
        return hasher.hexdigest() == digest

    def set_aside(self, digest: str) -> Path:
        """Move a damaged file out of the store (so it counts as missing and is fetched
        again); where it went."""
        self._seen.discard(digest)
        aside = self.root / DAMAGED
        aside.mkdir(exist_ok=True, mode=0o700)
        target = aside / digest
        os.replace(self.path(digest), target)
        return target

    def total_bytes(self) -> int:
        return sum(self.size(d) for d in self.held())
