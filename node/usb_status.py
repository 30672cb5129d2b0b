"""What the last USB sync of this node did, for `simpul status`, the status API and the page.

A sync (from the command line, the drive watcher or the "use this drive" button) holds an
exclusive lock in the data dir, so one node never syncs two drives at once, and records
its progress and outcome in `DATA_DIR/usb-status.json`: state `berjalan` (running) with
a progress line, then `selesai` with "selesai, aman dicabut" or `gagal` with the error.
A sync that ends in any way (an error, a stalled drive, the node stopping) records
`gagal`; one whose process died records nothing, so a `berjalan` found while nobody
holds the lock is read as `gagal` ("terputus"): the status never stays "berjalan".
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simpul.node.membership import write_public
from simpul.node.runtime import Node
from simpul.node.sync_counters import FAILED as FAILED_SESSION
from simpul.node.sync_counters import OK
from simpul.sync.store import now_ms

if TYPE_CHECKING:
    from simpul.node.usb_carrier import UsbReport

log = logging.getLogger(__name__)

STATUS_FILE = "usb-status.json"
LOCK_FILE = "usb.lock"
CARRIER = "usb"  # its name in the metrics
DONE = "selesai, aman dicabut"
DONE_WITH_NOTES = "selesai dengan catatan ({count} berkas bermasalah), aman dicabut"
FAILED = "gagal: {error}; drive aman dicabut"
RUNNING = "berjalan"
INTERRUPTED = "terputus: the sync stopped without finishing (its program ended)"
STOPPED = "the sync was stopped before it finished"


class UsbBusy(OSError):
    """Another USB sync of this node is running."""


def _running(data_dir: Path) -> bool:
    """True while some process holds this node's USB lock (a sync is running)."""
    try:
        with (data_dir / LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def read_status(data_dir: Path) -> dict[str, Any] | None:
    """The last recorded USB sync, or None if there was none (or the file is unreadable);
    a `berjalan` that no running sync holds is shown as `gagal` (interrupted)."""
    try:
        facts = json.loads((data_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(facts, dict):
        return None
    if facts.get("state") == RUNNING and not _running(data_dir):
        facts = {**facts, "state": "gagal", "error": INTERRUPTED,
                 "message": FAILED.format(error=INTERRUPTED)}  # fmt: skip
    return facts


def write_status(data_dir: Path, facts: dict[str, Any]) -> None:
    write_public(data_dir / STATUS_FILE, json.dumps(facts, ensure_ascii=False).encode())


@contextlib.contextmanager
def exclusive(data_dir: Path) -> Iterator[None]:
    """Hold this node's USB lock, or raise UsbBusy at once."""
    with (data_dir / LOCK_FILE).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsbBusy("another USB sync is running on this node; wait for it") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


async def tracked_sync(node: Node, path: Path, **options: Any) -> UsbReport:
    """`sync_drive` with the lock held and its progress and outcome in the status file."""
    # loaded here, not above: `simpul status` reads this module and need not load the
    # sync sessions' web stack (aiohttp, a third of a second at every start)
    from simpul.node.usb_carrier import sync_drive

    with exclusive(node.data_dir):
        facts: dict[str, Any] = {"state": RUNNING, "drive": str(path), "started_ms": now_ms()}

        def progress(text: str) -> None:
            write_status(node.data_dir, {**facts, "progress": text})

        progress("mulai")
        try:
            report = await sync_drive(node, path, progress=progress, **options)
        except BaseException as exc:  # also a cancelled sync: the status must not stay running
            stopped = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
            error = STOPPED if stopped else str(exc) or type(exc).__name__
            write_status(
                node.data_dir,
                {**facts, "state": "gagal", "message": FAILED.format(error=error),
                 "error": error, "finished_ms": now_ms()},
            )  # fmt: skip
            log.info("usb sync failed drive=%s error=%r", path, error)
            node.counters.session(CARRIER, "client", FAILED_SESSION)
            raise
        problems = len(report.problems)
        node.counters.session(CARRIER, "client", OK, refused=_refusals(report))
        message = DONE_WITH_NOTES.format(count=problems) if problems else DONE
        write_status(
            node.data_dir,
            {**facts, "state": "selesai", "message": message, "finished_ms": now_ms(),
             "imported": report.imported, "written": report.written_entries,
             "files": [asdict(f) for f in report.problems]},
        )  # fmt: skip
        log.info(
            "usb sync done drive=%s imported=%d written=%d problems=%d",
            path,
            report.imported,
            report.written_entries,
            problems,
        )
        return report


def _refusals(report: UsbReport) -> list[str]:
    """ "reason: detail" per refused run of entries, and per file refused whole."""
    refused = []
    for file in report.problems:
        if file.refused:
            refused += file.refused
        elif file.status not in ("imported", "held"):
            refused.append(f"{file.status}: {file.detail}")
    return refused
