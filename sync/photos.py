"""Photo references of households, and which photo files this node still lacks.

A reference is a small map in the household's Automerge document (sync/record_doc.py
keeps it under its own root key): the SHA-256 of the re-encoded JPEG (`hash`), its size
(`ukuran`), its thumbnail's hash and size (`kecil`, `kecil_ukuran`), pixel size, the
kind (`jenis`: depan, dalam, lainnya), when it was taken (`diambil`, from the camera, or
null) and by whom it was added (`oleh`). The bytes live in the PhotoStore
(sync/photo_store.py) under those hashes.

`PhotoIndex` knows every hash the stored records reference, refreshed from the records
written since its last look (the `updated_ms` of their rows), so asking what is missing
costs what changed, not the whole store (the first look in a data dir reads every
record once); from it come the files to fetch (thumbnails first) and the files no
reference needs any more (garbage).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from automerge import core

from simpul.sync.database import Database
from simpul.sync.photo_store import PhotoStore, is_hash
from simpul.sync.record_doc import (
    PHOTOS,
    RecordDoc,
    RecordDocError,
    extract,
    fold_photos,
    is_photo_key,
)

log = logging.getLogger(__name__)

KINDS = ("depan", "dalam", "lainnya")  # house front, inside, other
THUMB = "kecil"
FULL = "besar"
# records' rows carry the time their body was written, taken before the commit: look
# back this far so a write that committed late is not missed
LOOK_BACK_MS = 120_000
SCAN_BATCH = 500
INDEX_FILE = "index.json"


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


def _photo_files(data: bytes) -> dict[str, tuple[str, int]]:
    """The photo files one stored record references: digest -> (part, size). Reads only the
    photo keys of the document (a full read costs three times as much)."""
    doc = RecordDoc.load(data)
    keys = [k for k in doc.doc.keys(core.ROOT) if is_photo_key(k)]
    if not keys:
        return {}
    fields = {k: extract(doc.doc, obj) for k in keys if (obj := _map_of(doc.doc, k)) is not None}
    files: dict[str, tuple[str, int]] = {}
    for digest, ref in photos_of(fold_photos(fields)).items():
        files[digest] = (FULL, int(ref.get("ukuran") or 0))
        files[ref[THUMB]] = (THUMB, int(ref.get("kecil_ukuran") or 0))
    return files


def _map_of(doc: core.Document, key: str) -> bytes | None:
    got = doc.get(core.ROOT, key)
    return got[1] if got is not None and got[0] == core.ObjType.Map else None


def _scan(rows: list[tuple[str, bytes]]) -> dict[str, dict[str, tuple[str, int]] | None]:
    """Each record's photo files (None for a document that does not load)."""
    found: dict[str, dict[str, tuple[str, int]] | None] = {}
    for record_id, data in rows:
        try:
            found[record_id] = _photo_files(data)
        except RecordDocError as exc:
            log.warning("photo index skip record=%s error=%s", record_id, exc)
            found[record_id] = None
    return found


class PhotoIndex:
    """The photo files the stored records reference, kept up to date incrementally.

    A refresh looks at the records whose row was written since the newest it saw (less
    LOOK_BACK_MS, as a row's time is taken before its commit), skips those whose (time,
    size) it has already read, and reads the photo keys of the rest, off the event loop.
    What it knows is kept in `photos/index.json` (a cache: a damaged one is rebuilt), so
    a new process, such as `simpul status`, starts where the last one stopped.
    """

    def __init__(self, db: Database, store: PhotoStore) -> None:
        self.db = db
        self.store = store
        self._refs: dict[str, dict[str, tuple[str, int]]] = {}  # record -> digest -> part
        self._seen_ms: int | None = None
        self._saved_ms: int | None = None  # the watermark in the cache file
        self._versions: dict[str, tuple[int, int]] = {}  # recent records: (time, size) read
        self._cache = store.root / INDEX_FILE
        self._load()

    def _load(self) -> None:
        try:
            saved = json.loads(self._cache.read_text())
            refs = {
                rid: {d: (str(part), int(size)) for d, (part, size) in files.items()}
                for rid, files in saved["refs"].items()
            }
            seen = int(saved["seen_ms"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("photo index cache ignored path=%s error=%s", self._cache, exc)
            return
        self._refs, self._seen_ms, self._saved_ms = refs, seen, seen

    def _save(self) -> None:
        self.store.root.mkdir(parents=True, exist_ok=True)
        temp = self._cache.with_name(f"{INDEX_FILE}.{os.getpid()}.new")
        temp.write_text(json.dumps({"seen_ms": self._seen_ms, "refs": self._refs}))
        os.replace(temp, self._cache)

    async def refresh(self) -> None:
        """Read the photo references of every record written since the last refresh."""
        sql = (
            "SELECT r.id, r.updated_ms, length(b.doc)"
            " FROM records r JOIN record_bodies b USING (id)"
        )
        params: tuple[int, ...] = ()
        if self._seen_ms is not None:
            sql += " WHERE r.updated_ms >= ?"
            params = (self._seen_ms - LOOK_BACK_MS,)
        rows = await self.db.fetchall(sql, params)
        fresh = [(rid, (int(at), int(size))) for rid, at, size in rows]
        todo = [rid for rid, version in fresh if self._versions.get(rid) != version]
        changed = False
        for start in range(0, len(todo), SCAN_BATCH):
            ids = todo[start : start + SCAN_BATCH]
            marks = ",".join("?" * len(ids))
            bodies = await self.db.fetchall(
                f"SELECT id, doc FROM record_bodies WHERE id IN ({marks})", ids
            )
            for record_id, files in (await asyncio.to_thread(_scan, bodies)).items():
                if files is None:
                    continue
                if files != self._refs.get(record_id, {}):
                    changed = True
                if files:
                    self._refs[record_id] = files
                else:
                    self._refs.pop(record_id, None)
        newest = max([self._seen_ms or 0, *(v[0] for _, v in fresh)])
        floor = newest - LOOK_BACK_MS
        self._versions = {rid: v for rid, v in {**self._versions, **dict(fresh)}.items()
                          if v[0] >= floor}  # fmt: skip
        self._seen_ms = newest
        if changed or self._saved_ms is None or newest - self._saved_ms >= LOOK_BACK_MS // 2:
            await asyncio.to_thread(self._save)
            self._saved_ms = newest

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
