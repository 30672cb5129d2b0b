"""A node's house photos: add and remove them on a household, and keep the files tidy.

Adding re-encodes the upload off the event loop (sync/photo_image.py), stores the JPEG
and its thumbnail by hash (sync/photo_store.py), then writes the reference into the
household as one change through the record store, so it is signed, synced and shown in
the history like any edit. When that change cannot be written (no such household, out
of scope, disk full), files no reference needs are removed again: nothing half-stored.
Removing is a change too; the bytes go once no household references them.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from simpul.sync.database import Database
from simpul.sync.photo_store import PhotoStore, is_hash, sha256_hex
from simpul.sync.photos import KINDS, PhotoIndex, photos_of, reference, with_photo, without_photo
from simpul.sync.store import RecordNotFound, RecordStore

log = logging.getLogger(__name__)


class NoSuchPhoto(Exception):
    """The household has no photo with that hash."""


class Photos:
    """The photo files and references of one node."""

    def __init__(self, data_dir: Path, db: Database, records: RecordStore) -> None:
        self.store = PhotoStore(data_dir)
        self.store.open()
        self.index = PhotoIndex(db, self.store)
        self.records = records

    async def add(self, record_id: str, data: bytes, kind: str, operator: str) -> dict[str, Any]:
        """Re-encode and store a photo, reference it from the household; the reference.

        Raises PhotoRejected (bad image, unknown kind), RecordNotFound, OutOfScope or
        DiskFull; on any of them no new file is left behind.
        """
        # Pillow only here: every `simpul` command opens a node, few of them add photos
        from simpul.sync.photo_image import PhotoRejected, reencode

        if kind not in KINDS:
            raise PhotoRejected("kind", f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        encoded = await asyncio.to_thread(reencode, data)
        digests = [sha256_hex(encoded.full), sha256_hex(encoded.thumb)]
        fresh = [d for d in digests if not self.store.has(d)]
        try:
            full = await asyncio.to_thread(self.store.put, encoded.full)
            thumb = await asyncio.to_thread(self.store.put, encoded.thumb)
            ref = reference(
                full,
                len(encoded.full),
                thumb,
                len(encoded.thumb),
                kind,
                encoded.width,
                encoded.height,
                encoded.taken,
                operator,
            )
            await self.records.update(record_id, lambda h: with_photo(h, ref), operator)
        except Exception:
            await self._drop_unreferenced(fresh)
            raise
        log.info(
            "photo add record=%s digest=%s kind=%s bytes=%d thumb_bytes=%d operator=%s",
            record_id, full, kind, len(encoded.full), len(encoded.thumb), operator,
        )  # fmt: skip
        return ref

    async def remove(self, record_id: str, digest: str, operator: str) -> None:
        """Take a photo off a household (a change); its files go when nothing else needs
        them. Raises NoSuchPhoto, RecordNotFound or OutOfScope."""

        def edit(household: dict[str, Any]) -> dict[str, Any]:
            if digest not in photos_of(household):
                raise NoSuchPhoto(digest)
            return without_photo(household, digest)

        record = await self.records.get(record_id)
        if record is None or record["_meta"]["deleted"]:
            raise RecordNotFound(record_id)
        ref = photos_of(record).get(digest)
        await self.records.update(record_id, edit, operator)
        await self._drop_unreferenced([digest, ref["kecil"]] if ref else [digest])
        log.info("photo remove record=%s digest=%s operator=%s", record_id, digest, operator)

    async def _drop_unreferenced(self, digests: list[str]) -> None:
        await self.index.refresh()
        referenced = self.index.referenced()
        for digest in digests:
            if is_hash(digest) and digest not in referenced:
                self.store.remove(digest)
                log.info("photo gc digest=%s", digest)

    async def verify(self) -> tuple[int, list[str]]:
        """Check every stored file against its hash; set damaged ones aside, so they are
        fetched again from a peer. How many were checked, and the damaged hashes."""
        damaged = []
        held = list(self.store.held())
        for digest in held:
            if not await asyncio.to_thread(self.store.check, digest):
                self.store.set_aside(digest)
                log.warning("photo damaged digest=%s action=set aside", digest)
                damaged.append(digest)
        return len(held), damaged

    async def status(self) -> dict[str, Any]:
        """Held and still-to-fetch counts for `GET /api/v1/status`."""
        progress = await self.index.progress()
        return {**progress, "bytes_held": await asyncio.to_thread(self.store.total_bytes)}
