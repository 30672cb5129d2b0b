"""A courier's drive as Simpul lays it out: folders, file names, manifest, atomic writes, space.

    PATH/SIMPUL/manifest.json              the drive's frontier per network (a cache)
    PATH/SIMPUL/<network id>/network.json  revocation list and wrapped data keys (public)
    PATH/SIMPUL/<network id>/*.simpul      drive files (sync/drive_file.py), oldest first

Names use only lower-case letters, digits, '-' and '.', start with the UTC time of
writing (so they sort by time), and stay far below FAT's 255 characters: valid on FAT32
and exFAT, which compare names without case. Every write goes to a temporary name, is
fsynced, renamed into place and the folder fsynced, so a drive pulled mid-write never
holds a file that looks complete; temporaries left by such a pull are removed on the
next sync. A write that would leave less than `keep_free` percent of the drive free is
refused before it starts (`DriveFull`), and one that runs out of space midway is removed.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SIMPUL_DIR = "SIMPUL"
MANIFEST = "manifest.json"
NEWS = "network.json"
SUFFIX = ".simpul"
TEMP_SUFFIX = ".tmp"
DEFAULT_KEEP_FREE = 10.0  # percent of the drive left free
MAX_FILE_BYTES = 256 * 1024 * 1024  # per drive file: far below FAT32's 4 GiB
NETWORK_ID = re.compile(r"[0-9a-f]{64}")
FILE_NAME = re.compile(r"\d{8}-\d{9}-[0-9a-f]{8}-[0-9a-f]{4}\.simpul")


class DriveFull(OSError):
    """Not enough room on the drive; nothing was written."""


def _mib(count: float) -> str:
    return f"{count / (1024 * 1024):.1f} MiB"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot sync a folder; the rename still holds
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, keep_free: float = 0.0) -> None:
    """Write `data` as `path` in one step as seen by a reader: all of it, or nothing."""
    usage = shutil.disk_usage(path.parent)
    reserve = usage.total * keep_free / 100
    if usage.free - len(data) < reserve:
        raise DriveFull(
            errno.ENOSPC,
            f"the drive is full: writing needs {_mib(len(data))}, it has {_mib(usage.free)} "
            f"free and keeps {keep_free:g}% ({_mib(reserve)}) free; use an emptier drive "
            "or compact this one ('simpul usb sync --compact')",
        )
    temp = path.with_name(path.name + TEMP_SUFFIX)
    try:
        with temp.open("wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DriveFull(
                errno.ENOSPC, f"the drive filled up while writing {path.name}; nothing was added"
            ) from exc
        raise
    _fsync_dir(path.parent)


def file_name(writer: str, created_ms: int) -> str:
    """A name that sorts by time: 20261122-091500123-<writer 8 hex>-<4 random hex>.simpul."""
    moment = datetime.fromtimestamp(created_ms / 1000, UTC)
    stamp = moment.strftime("%Y%m%d-%H%M%S") + f"{created_ms % 1000:03d}"
    return f"{stamp}-{writer[:8]}-{os.urandom(2).hex()}{SUFFIX}"


@dataclass(frozen=True)
class Drive:
    """A drive (or any folder) that carries Simpul files."""

    root: Path

    @property
    def simpul_dir(self) -> Path:
        return self.root / SIMPUL_DIR

    def exists(self) -> bool:
        return self.simpul_dir.is_dir()

    def prepare(self, network_id: str) -> Path:
        """The network's folder, made if needed."""
        folder = self.simpul_dir / network_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def networks(self) -> list[str]:
        """The network ids that have a folder on this drive."""
        if not self.exists():
            return []
        return sorted(
            p.name.lower()
            for p in self.simpul_dir.iterdir()
            if NETWORK_ID.fullmatch(p.name.lower())
        )

    def files(self, network_id: str) -> list[Path]:
        """The network's drive files, oldest first."""
        folder = self.simpul_dir / network_id
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if FILE_NAME.fullmatch(p.name.lower()))

    def remove_temporaries(self, network_id: str) -> int:
        """Delete what an interrupted write left behind; how many."""
        folder = self.simpul_dir / network_id
        if not folder.is_dir():
            return 0
        removed = 0
        for path in folder.iterdir():
            if path.name.endswith(TEMP_SUFFIX):
                path.unlink()
                removed += 1
                log.info("usb temporary removed path=%s", path)
        return removed

    def manifest(self) -> dict[str, Any]:
        """The manifest's networks; {} when absent or unreadable (it is rebuilt)."""
        try:
            document = json.loads((self.simpul_dir / MANIFEST).read_text(encoding="utf-8"))
            networks = document["networks"]
            return networks if isinstance(networks, dict) else {}
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def write_manifest(self, network_id: str, facts: dict[str, Any]) -> None:
        networks = self.manifest()
        networks[network_id] = facts
        document = {"format": 1, "networks": networks}
        write_atomic(self.simpul_dir / MANIFEST, json.dumps(document, indent=1).encode())

    def news(self, network_id: str) -> bytes | None:
        path = self.simpul_dir / network_id / NEWS
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
