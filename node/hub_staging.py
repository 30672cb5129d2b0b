"""Resumable uploads at the hub: entries of a chunk whose checkpoint has not arrived yet.

A chunk is committed only when its signed checkpoint arrives, and an import batch is one
chunk of 1,000 households. Over a poor mobile link a push is often cut inside such a
chunk; without this module the next round would send the whole chunk again.

So the hub keeps (stages) every `entries` frame of a chunk as it arrives, durably, per
origin, and tells nodes on every pull answer how far it has staged (`X-Simpul-Staged`,
a frontier). The uplink then continues from there (`node/uplink_session.py`), and when
the rest of the chunk and its checkpoint arrive the hub hands the staged frames and the
new ones to the engine's receiver together: the chunk is verified whole (chain and
signature) and committed, or refused whole, exactly as if it had come in one piece.
Staged entries are never applied or served before that, and a refused chunk's staged
entries are dropped. A stream that starts the origin again right after what the hub holds
(another node, or one that did not know) replaces what was staged.

`FileStaging` keeps one append-only file per origin in the network's folder (the bundle
encoding, so a frame cut short by a crash is simply not read back). It does not fsync:
staged entries are not acknowledged to anyone, so losing the tail in a power cut only
means the uplink sends it again (the hub reports what it can read back).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from simpul.sync.bundle import (
    HEADER,
    BundleDecoder,
    BundleError,
    Entries,
    Frame,
    Hello,
    encode_frame,
)
from simpul.sync.engine import SyncEngine
from simpul.sync.frontier import Frontier
from simpul.sync.receiver import IngestReport, Receiver

log = logging.getLogger(__name__)

STAGING_DIR = "staging"


class Staging(Protocol):
    """Durable entries frames of unfinished chunks, per origin."""

    def frontier(self) -> Frontier:
        """Origin -> last staged seq."""
        ...

    def frames(self, origin: bytes) -> list[Entries]: ...

    def append(self, frame: Entries) -> None: ...

    def clear(self, origin: bytes) -> None: ...


class FileStaging:
    """One append-only bundle file per origin under `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._last: dict[bytes, int] = {}
        for path in folder.glob("*.staged"):
            frames = self._read(path)
            path.unlink()  # rewritten with what reads back: a torn tail must not stay inside
            for frame in frames:
                self.append(frame)

    def _path(self, origin: bytes) -> Path:
        return self.folder / f"{origin.hex()}.staged"

    @staticmethod
    def _read(path: Path) -> list[Entries]:
        data = path.read_bytes()
        try:
            frames = BundleDecoder().feed(data)
        except BundleError as exc:  # a frame cut short by a crash: keep the valid prefix
            frames = exc.frames
        return [f for f in frames if isinstance(f, Entries)]

    def frontier(self) -> Frontier:
        return Frontier(self._last)

    def frames(self, origin: bytes) -> list[Entries]:
        path = self._path(origin)
        return self._read(path) if path.exists() else []

    def append(self, frame: Entries) -> None:
        path = self._path(frame.origin)
        fresh = not path.exists()
        with path.open("ab") as out:  # no fsync (see the module docstring)
            out.write((HEADER if fresh else b"") + encode_frame(frame))
        self._last[frame.origin] = _last_seq(frame)

    def clear(self, origin: bytes) -> None:
        self._path(origin).unlink(missing_ok=True)
        self._last.pop(origin, None)


def _last_seq(frame: Entries) -> int:
    return frame.first_seq + len(frame.items) - 1


class StagingReceiver:
    """A `Receiver` that stages entries as they arrive and resumes staged chunks."""

    def __init__(self, inner: Receiver, staging: Staging) -> None:
        self._inner = inner
        self._staging = staging
        self._started: set[bytes] = set()  # origins whose entries this stream carried

    @property
    def peer(self) -> Hello | None:
        return self._inner.peer

    @property
    def their_frontier(self) -> Frontier | None:
        return self._inner.their_frontier

    def _entries(self, frame: Entries) -> list[Frame]:
        origin = frame.origin
        passed: list[Frame] = [frame]
        if origin not in self._started:
            self._started.add(origin)
            last = self._staging.frontier().get(origin, 0)
            if last and frame.first_seq == last + 1:
                staged = self._staging.frames(origin)
                log.info(
                    "hub staging resume origin=%s from=%d staged_frames=%d",
                    origin.hex(),
                    frame.first_seq,
                    len(staged),
                )
                passed = [*staged, frame]
            elif last:
                self._staging.clear(origin)
        self._staging.append(frame)
        return passed

    async def feed(self, frames: Iterable[Frame]) -> None:
        passed: list[Frame] = []
        for frame in frames:
            passed += self._entries(frame) if isinstance(frame, Entries) else [frame]
        await self._inner.feed(passed)

    async def drain(self) -> IngestReport:
        """Everything committed; staged entries of committed or refused chunks forgotten."""
        report = await self._inner.drain()
        refused = {r.origin for r in report.refused}
        for origin, last in self._staging.frontier().items():
            if origin in refused or report.frontier.get(origin, 0) >= last:
                self._staging.clear(origin)
        return report

    async def receive(self, frames: Iterable[Frame]) -> IngestReport:
        await self.feed(frames)
        return await self.drain()

    async def finish(self) -> IngestReport:
        """The stream ended. Entries still waiting for their checkpoint are not refused
        (as `uncovered`): every entries frame is staged, and the chunk completes in a
        later stream (an uplink stopped by its budget inside a chunk)."""
        report = await self.drain()
        for origin, last in self._staging.frontier().items():
            if origin in self._started:
                log.info("hub staging kept origin=%s up_to=%d", origin.hex(), last)
        return report


class StagingEngine:
    """A network's engine whose receivers stage (everything else is the engine's)."""

    def __init__(self, engine: SyncEngine, staging: Staging) -> None:
        self._engine = engine
        self.staging = staging

    def __getattr__(self, name: str) -> object:
        return getattr(self._engine, name)

    def receiver(self) -> StagingReceiver:
        return StagingReceiver(self._engine.receiver(), self.staging)
