"""A courier's drive as Simpul lays it out: folders, file names, manifest, atomic writes, space.

    PATH/SIMPUL/manifest.json              the drive's frontier per network (a cache)
    PATH/SIMPUL/<network id>/network.json  revocation list and wrapped data keys (public)
    PATH/SIMPUL/<network id>/*.simpul      drive files (sync/drive_file.py), oldest first

Names use only lower-case letters, digits, '-' and '.', start with the UTC time of
writing (so they sort by time), and stay far below FAT's 255 characters: valid on FAT32
and exFAT, which compare names without case. Every write goes to a fresh temporary name
(created with O_EXCL|O_NOFOLLOW in the folder it belongs to), is fsynced, renamed into
place and the folder fsynced, so a drive pulled mid-write never holds a file that looks
complete; temporaries left by such a pull are removed on the next sync. A write that
would leave less than `keep_free` percent of the drive free is refused before it starts
(`DriveFull`), and one that runs out of space midway is removed.

A drive is untrusted input: anyone may have made it. Folders are opened once with
O_NOFOLLOW and every name below is used relative to that open folder, never as a path;
each name is checked with lstat before it is opened, and opened with O_NOFOLLOW and
O_NONBLOCK and checked again with fstat, so a symbolic link, FIFO, device, socket or
folder where a file belongs is refused (`PathRefused`, one line in the drive's report)
and never followed, opened or written through. Small files (manifest, news) are read
only up to a size limit; drive files are read at offsets (`DriveSource`), never whole.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

SIMPUL_DIR = "SIMPUL"
MANIFEST = "manifest.json"
NEWS = "network.json"
SUFFIX = ".simpul"
TEMP_SUFFIX = ".tmp"
DEFAULT_KEEP_FREE = 10.0  # percent of the drive left free
MAX_FILE_BYTES = 256 * 1024 * 1024  # per drive file: far below FAT32's 4 GiB
MAX_MANIFEST_BYTES = 1024 * 1024
NETWORK_ID = re.compile(r"[0-9a-f]{64}")
FILE_NAME = re.compile(r"\d{8}-\d{9}-[0-9a-f]{8}-[0-9a-f]{4}\.simpul")
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class DriveFull(OSError):
    """Not enough room on the drive; nothing was written."""


class PathRefused(OSError):
    """A path on the drive that is not what belongs there (a link, FIFO, device, folder
    where a file belongs, or too large): refused, never followed or opened."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _mib(count: float) -> str:
    return f"{count / (1024 * 1024):.1f} MiB"


def kind(mode: int) -> str:
    """What a file system entry is, in words."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a regular file" if stat.S_ISREG(mode) else "an unknown kind of entry"


def file_name(writer: str, created_ms: int) -> str:
    """A name that sorts by time: 20261122-091500123-<writer 8 hex>-<4 random hex>.simpul."""
    moment = datetime.fromtimestamp(created_ms / 1000, UTC)
    stamp = moment.strftime("%Y%m%d-%H%M%S") + f"{created_ms % 1000:03d}"
    return f"{stamp}-{writer[:8]}-{os.urandom(2).hex()}{SUFFIX}"


class DriveSource:
    """A regular file on the drive, open for reading at offsets (a drive_file Source)."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        parts = []
        while length > 0:
            part = os.pread(self._fd, length, offset)
            if not part:
                break
            parts.append(part)
            offset += len(part)
            length -= len(part)
        return b"".join(parts)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> DriveSource:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class DriveFolder:
    """A folder on a drive, held open: every name in it is used relative to it, unfollowed."""

    def __init__(self, fd: int, shown: str) -> None:
        self.fd = fd
        self.shown = shown  # its path on the drive, for reports

    @classmethod
    def open(cls, name: str, parent: DriveFolder | None, shown: str, create: bool) -> DriveFolder:
        """The folder `name` in `parent` (or the path `name`), made if `create`; PathRefused
        if something else than a folder is there, FileNotFoundError if nothing is."""
        parent_fd = parent.fd if parent is not None else None
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=parent_fd)
        try:
            return cls(os.open(name, _FOLDER_FLAGS, dir_fd=parent_fd), shown)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            found = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            raise PathRefused(
                shown, f"{kind(found.st_mode)} where a folder belongs; refused"
            ) from None

    def child(self, name: str, create: bool = False) -> DriveFolder:
        return DriveFolder.open(name, self, f"{self.shown}/{name}", create)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> DriveFolder:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def path(self, name: str) -> str:
        return f"{self.shown}/{name}"

    def names(self) -> list[str]:
        return sorted(os.listdir(self.fd))

    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def is_folder(self, name: str) -> bool:
        found = self.lstat(name)
        return found is not None and stat.S_ISDIR(found.st_mode)

    def open_file(self, name: str, limit: int | None = None) -> DriveSource:
        """The regular file `name`, open for reading; PathRefused for anything else (checked
        with lstat before opening and fstat after) or for one larger than `limit`."""
        found = self.lstat(name)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "no such file on the drive", self.path(name))
        if not stat.S_ISREG(found.st_mode):
            raise PathRefused(
                self.path(name), f"{kind(found.st_mode)} where a file belongs; refused"
            )
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise PathRefused(self.path(name), "replaced by a symbolic link; refused") from None
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
            found.st_dev,
            found.st_ino,
        ):
            os.close(fd)
            raise PathRefused(self.path(name), "changed while being opened; refused")
        if limit is not None and opened.st_size > limit:
            os.close(fd)
            raise PathRefused(
                self.path(name), f"{opened.st_size} bytes, more than the {limit} allowed; refused"
            )
        return DriveSource(fd, opened.st_size)

    def read_small(self, name: str, limit: int) -> bytes | None:
        """All of the regular file `name` (at most `limit` bytes), None if absent."""
        try:
            source = self.open_file(name, limit)
        except FileNotFoundError:
            return None
        with source:
            return source.read(0, source.size)

    def fsync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:  # some file systems cannot sync a folder; the rename holds
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
                raise

    def write_atomic(self, name: str, data: bytes, keep_free: float = 0.0) -> None:
        """Write `data` as `name` in one step as seen by a reader: all of it, or nothing.
        PathRefused when something else than a regular file holds the name."""
        found = self.lstat(name)
        if found is not None and not stat.S_ISREG(found.st_mode):
            raise PathRefused(
                self.path(name), f"{kind(found.st_mode)} where a file belongs; refused"
            )
        usage = os.statvfs(self.fd)
        total, free = usage.f_blocks * usage.f_frsize, usage.f_bavail * usage.f_frsize
        reserve = total * keep_free / 100
        if free - len(data) < reserve:
            raise DriveFull(
                errno.ENOSPC,
                f"the drive is full: writing needs {_mib(len(data))}, it has {_mib(free)} "
                f"free and keeps {keep_free:g}% ({_mib(reserve)}) free; use an emptier drive "
                "or compact this one ('simpul usb sync --compact')",
            )
        temp = f"{name}.{os.urandom(4).hex()}{TEMP_SUFFIX}"
        try:
            with os.fdopen(os.open(temp, _CREATE_FLAGS, 0o644, dir_fd=self.fd), "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as exc:
            self.unlink(temp)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DriveFull(
                    errno.ENOSPC, f"the drive filled up while writing {name}; nothing was added"
                ) from exc
            raise
        self.fsync()

    def unlink(self, name: str) -> None:
        """Remove the entry `name` (never what a link points at); quiet if absent."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def remove_temporaries(self) -> list[PathRefused]:
        """Delete what interrupted writes left behind (any entry named *.tmp but a folder;
        removing a link or FIFO touches nothing outside the drive); each such entry that
        was not a plain file, and each folder left alone, as a refusal to report."""
        refused = []
        for name in self.names():
            if not name.endswith(TEMP_SUFFIX):
                continue
            found = self.lstat(name)
            if found is None:
                continue
            if stat.S_ISDIR(found.st_mode):
                refused.append(
                    PathRefused(self.path(name), "a folder named as a temporary; left alone")
                )
                continue
            self.unlink(name)
            log.info("usb temporary removed path=%s kind=%r", self.path(name), kind(found.st_mode))
            if not stat.S_ISREG(found.st_mode):
                refused.append(
                    PathRefused(
                        self.path(name), f"{kind(found.st_mode)} named as a temporary; removed"
                    )
                )
        return refused


@dataclass(frozen=True)
class Drive:
    """A drive (or any folder) that carries Simpul files."""

    root: Path

    def exists(self) -> bool:
        """True when the drive holds something at SIMPUL/ (checked, not followed)."""
        try:
            os.stat(self.root / SIMPUL_DIR, follow_symlinks=False)
        except OSError:
            return False
        return True

    def open(self, create: bool = False) -> DriveFolder:
        """The drive's SIMPUL folder, held open (PathRefused if it is not a real folder)."""
        # the drive's own path is the operator's (or the mount's) choice: it is followed
        with DriveFolder(
            os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), str(self.root)
        ) as root:
            return DriveFolder.open(SIMPUL_DIR, root, SIMPUL_DIR, create)


def networks(simpul: DriveFolder) -> list[str]:
    """The network ids that have a folder on this drive."""
    return sorted(n.lower() for n in simpul.names() if NETWORK_ID.fullmatch(n.lower()))


def drive_file_names(folder: DriveFolder) -> list[str]:
    """Names of the network's drive files, oldest first (each is checked when opened)."""
    return [n for n in folder.names() if FILE_NAME.fullmatch(n.lower())]


def read_manifest(simpul: DriveFolder) -> tuple[dict[str, Any], PathRefused | None]:
    """The manifest's networks ({} when absent or unreadable: it is rebuilt), and why it
    was refused if it was."""
    try:
        data = simpul.read_small(MANIFEST, MAX_MANIFEST_BYTES)
    except PathRefused as exc:
        return {}, exc
    if data is None:
        return {}, None
    try:
        networks = json.loads(data)["networks"]
    except RecursionError:
        return {}, PathRefused(simpul.path(MANIFEST), "nested too deeply; ignored and rebuilt")
    except (ValueError, KeyError, TypeError):
        return {}, None
    if not isinstance(networks, dict):
        return {}, None
    kept = {k: v for k, v in networks.items() if NETWORK_ID.fullmatch(k) and isinstance(v, dict)}
    return kept, None


def write_manifest(simpul: DriveFolder, networks: dict[str, Any]) -> None:
    document = {"format": 1, "networks": networks}
    simpul.write_atomic(MANIFEST, json.dumps(document, indent=1).encode())
