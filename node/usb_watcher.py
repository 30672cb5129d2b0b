"""Automatic USB sync: watch where drives get mounted and sync each one that is plugged in.

While `simpul node` runs, the watcher looks every few seconds (`SIMPUL_USB_POLL`, default
3) under the mount roots (`/media`, `/run/media`, `/mnt` and `--usb-root` folders; the
variable `SIMPUL_USB_ROOTS`, paths separated by ':', replaces the defaults) for folders up
to two levels deep — `/media/LABEL`, `/media/USER/LABEL`, `/run/media/USER/LABEL` — that
hold a `SIMPUL/` folder, and syncs each once per insertion: a drive is synced again only
after it was gone from a look. The udev rule in systemd/ mounts a plugged drive under
`/media/simpul/`, where the next look finds it. An empty drive (a mount point without
`SIMPUL/`) is listed, and synced only after the operator asks for it ("use this drive",
`POST /api/v1/usb/use`). Progress and outcome go to the USB status (node/usb_status.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from simpul.node.runtime import Node
from simpul.node.usb_drive import SIMPUL_DIR
from simpul.node.usb_status import tracked_sync

log = logging.getLogger(__name__)

ROOTS_ENV = "SIMPUL_USB_ROOTS"
POLL_ENV = "SIMPUL_USB_POLL"
DEFAULT_ROOTS = (Path("/media"), Path("/run/media"), Path("/mnt"))
DEFAULT_POLL_SECONDS = 3.0


class NotADrive(ValueError):
    """A path the operator offered that is not a folder under the watched roots."""


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:  # absent, unreadable, or unplugged while we looked
        return []


class UsbWatcher:
    """Finds mounted drives and syncs those that carry (or were given) a SIMPUL folder."""

    def __init__(self, node: Node, roots: list[Path], poll_seconds: float) -> None:
        self.node = node
        self.roots = roots
        self.poll_seconds = poll_seconds
        self._synced: set[Path] = set()  # drives synced since they were plugged in
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_environment(cls, node: Node, extra_roots: list[Path]) -> UsbWatcher:
        configured = os.environ.get(ROOTS_ENV)
        roots = [Path(p) for p in configured.split(":") if p] if configured else list(DEFAULT_ROOTS)
        poll = float(os.environ.get(POLL_ENV) or DEFAULT_POLL_SECONDS)
        return cls(node, roots + extra_roots, poll)

    def _candidates(self) -> list[Path]:
        found = []
        for root in self.roots:
            for child in _children(root):
                found.append(child)
                found += _children(child)
        return found

    def empty_drives(self) -> list[str]:
        """Mounted drives without a SIMPUL folder: the operator may choose to use them."""
        return [
            str(p)
            for p in self._candidates()
            if os.path.ismount(p) and not (p / SIMPUL_DIR).is_dir()
        ]

    def use(self, path: str) -> Path:
        """Make the drive at `path` a Simpul drive and sync it at once."""
        drive = Path(path).resolve()
        if not drive.is_dir() or not any(drive.is_relative_to(r.resolve()) for r in self.roots):
            raise NotADrive(f"{path} is not a drive folder under {', '.join(map(str, self.roots))}")
        (drive / SIMPUL_DIR).mkdir(exist_ok=True)
        self._synced.discard(drive)
        self._wake.set()
        log.info("usb drive taken into use path=%s", drive)
        return drive

    async def look(self) -> None:
        """One look: sync every newly present drive; forget drives that are gone."""
        present = {p.resolve() for p in self._candidates() if (p / SIMPUL_DIR).is_dir()}
        self._synced &= present
        for drive in sorted(present - self._synced):
            self._synced.add(drive)
            log.info("usb drive found path=%s", drive)
            try:
                await tracked_sync(self.node, drive)
            except Exception as exc:  # recorded in the USB status; the watcher keeps going
                log.warning("usb drive sync failed path=%s error=%r", drive, str(exc))

    async def _run(self) -> None:
        while True:
            await self.look()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    def start(self) -> None:
        log.info("usb watcher roots=%s poll=%gs", ":".join(map(str, self.roots)), self.poll_seconds)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
