"""Photo references of households, and which photo files this node still lacks.

A reference is a small map in the household's Automerge document (sync/record_doc.py
keeps it under its own root key): the SHA-256 of the re-encoded JPEG (`hash`), its size
(`ukuran`), its thumbnail's hash and size (`kecil`, `kecil_ukuran`), pixel size, the
kind (`jenis`: depan, dalam, lainnya), when it was taken (`diambil`, from the camera, or
null) and by whom it was added (`oleh`). The bytes live in the PhotoStore
(sync/photo_store.py) under those hashes.

`PhotoIndex` knows every hash the stored records reference, refreshed from the records
written since its last look (the `updated_ms` of their rows), so asking what is missing
costs what changed, not the whole store; from it come the files to fetch (thumbnails
first) and the files no reference needs any more (garbage).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from simpul.sync.database import Database
from simpul.sync.photo_store import PhotoStore, is_hash
from simpul.sync.record_doc import PHOTOS, RecordDoc, RecordDocError

log = logging.getLogger(__name__)

KINDS = ("depan", "dalam", "lainnya")  # house front, inside, other
THUMB = "kecil"
FULL = "besar"
# records' rows carry the time their body was written, taken before the commit: look
# back this far so a write that committed late is not missed
LOOK_BACK_MS = 120_000


def reference(
    digest: str,
    size: int,
    thumb: str,
    thumb_size: int,
    kind: str,
    width: int,
    height: int,
    taken: str | None,
    by: str,
) -> dict[str, Any]:
    """The reference a household keeps of one photo."""
    return {
        "hash": digest,
        "ukuran": size,
        THUMB: thumb,
        "kecil_ukuran": thumb_size,
        "jenis": kind,
        "lebar": width,
        "tinggi": height,
        "diambil": taken,
        "oleh": by,
    }


def photos_of(household: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A household's valid photo references, by hash."""
    found = household.get(PHOTOS) or {}
    return {
        d: ref
        for d, ref in found.items()
        if is_hash(d) and isinstance(ref, dict) and is_hash(ref.get(THUMB))
    }


def with_photo(household: Mapping[str, Any], ref: Mapping[str, Any]) -> dict[str, Any]:
    """The household with the photo `ref` added (or its reference replaced)."""
    return {**household, PHOTOS: {**(household.get(PHOTOS) or {}), ref["hash"]: dict(ref)}}


def without_photo(household: Mapping[str, Any], digest: str) -> dict[str, Any]:
    """The household without the photo `digest`; KeyError when it has none such."""
    photos = dict(household.get(PHOTOS) or {})
    del photos[digest]
    return {**household, PHOTOS: photos}


@dataclass(frozen=True)
class Wanted:
    """A photo file this node references but does not hold."""

    digest: str
    part: str  # THUMB or FULL
    size: int  # bytes, as the reference says (0 when it does not say)


class PhotoIndex:
    """The photo files the stored records reference, kept up to date incrementally."""

    def __init__(self, db: Database, store: PhotoStore) -> None:
        self.db = db
        self.store = store
        self._refs: dict[str, dict[str, tuple[str, int]]] = {}  # record -> digest -> part
        self._seen_ms: int | None = None

    async def refresh(self) -> None:
        """Read the photo references of every record written since the last refresh."""
        sql = "SELECT r.id, b.doc, r.updated_ms FROM records r JOIN record_bodies b USING (id)"
        params: tuple[int, ...] = ()
        if self._seen_ms is not None:
            sql += " WHERE r.updated_ms >= ?"
            params = (self._seen_ms - LOOK_BACK_MS,)
        newest = self._seen_ms or 0
        async with self.db.reader.execute(sql, params) as cursor:
            async for record_id, data, updated in cursor:
                newest = max(newest, updated)
                try:
                    household = RecordDoc.load(data).household()
                except RecordDocError as exc:
                    log.warning("photo index skip record=%s error=%s", record_id, exc)
                    continue
                files: dict[str, tuple[str, int]] = {}
                for digest, ref in photos_of(household).items():
                    files[digest] = (FULL, int(ref.get("ukuran") or 0))
                    files[ref[THUMB]] = (THUMB, int(ref.get("kecil_ukuran") or 0))
                if files:
                    self._refs[record_id] = files
                else:
                    self._refs.pop(record_id, None)
        self._seen_ms = newest

    def referenced(self) -> dict[str, tuple[str, int]]:
        """Every referenced file: digest -> (part, size)."""
        every: dict[str, tuple[str, int]] = {}
        for files in self._refs.values():
            every.update(files)
        return every

    async def wanted(self) -> list[Wanted]:
        """Referenced files not held here: every thumbnail first, then the full photos."""
        await self.refresh()
        missing = [
            Wanted(digest, part, size)
            for digest, (part, size) in self.referenced().items()
            if not self.store.has(digest)
        ]
        return sorted(missing, key=lambda w: (w.part != THUMB, w.digest))

    async def garbage(self) -> list[str]:
        """Held files that no record references any more."""
        await self.refresh()
        referenced = self.referenced()
        return [digest for digest in self.store.held() if digest not in referenced]

    async def collect(self) -> int:
        """Remove every unreferenced file; how many went."""
        gone = await self.garbage()
        for digest in gone:
            self.store.remove(digest)
            log.info("photo gc digest=%s", digest)
        return len(gone)

    async def progress(self) -> dict[str, int]:
        """What `GET /api/v1/status` and the pages show: held and still to fetch."""
        wanted = await self.wanted()
        referenced = self.referenced()
        return {
            "referenced": sum(1 for part, _ in referenced.values() if part == FULL),
            "thumbs_missing": sum(1 for w in wanted if w.part == THUMB),
            "full_missing": sum(1 for w in wanted if w.part == FULL),
            "bytes_missing": sum(w.size for w in wanted),
        }
