"""House photos on a courier's USB drive: after the records, sealed under the data key.

Photo files live in `SIMPUL/<network id>/foto/` beside the drive's bundle files, one per
photo or thumbnail, sealed (crypto/sealed_photo.py) so that the drive holds no image
bytes in clear and its file names do not reveal which photo is which. A sync first
takes the photos its records reference and it lacks (thumbnails first), each checked
against its hash before it is kept (a damaged file is removed from the drive, so a node
that holds the photo writes it again), then writes every referenced photo it holds that the
drive lacks, thumbnails first, each file written atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from simpul.crypto.data_key import DataKey
from simpul.crypto.sealed_photo import open_photo, photo_name, seal_photo
from simpul.crypto.sealed_stream import SealError
from simpul.node.photos import Photos
from simpul.node.usb_drive import DriveFolder, PathRefused
from simpul.sync.photo_store import PhotoMismatch
from simpul.sync.photos import THUMB

log = logging.getLogger(__name__)

PHOTO_FOLDER = "foto"
SUFFIX = ".sfoto"
MAX_PHOTO_FILE = 8 * 1024 * 1024  # a sealed re-encoded photo is well under 1 MiB

DriveIo = Callable[..., Awaitable[Any]]  # runs a drive call in a worker thread, bounded


@dataclass
class PhotoCarry:
    """What one drive sync did with photos."""

    taken: int = 0
    refused: int = 0  # files that did not open or did not match their hash
    written: int = 0


def _names(keys: tuple[DataKey, ...], digest: str) -> list[tuple[DataKey, str]]:
    return [(k, photo_name(k.secret, bytes.fromhex(digest)) + SUFFIX) for k in keys]


async def take_photos(
    photos: Photos, keys: tuple[DataKey, ...], folder: DriveFolder, io: DriveIo
) -> PhotoCarry:
    """Import the drive's photos that this node's records reference and it lacks. The
    drive is untrusted: names are used relative to the network's folder, never followed,
    and anything but a small regular file is refused (node/usb_drive.py)."""
    carry = PhotoCarry()
    if not await io(folder.is_folder, PHOTO_FOLDER):
        return carry
    with await io(folder.child, PHOTO_FOLDER) as shelf:
        present = set(await io(shelf.names))
        for wanted in await photos.index.wanted():
            for key, name in _names(keys, wanted.digest):
                if name not in present:
                    continue
                try:
                    blob = await io(shelf.read_small, name, MAX_PHOTO_FILE)
                    _, data = open_photo(blob or b"", key.secret)
                    await io(photos.store.put, data, wanted.digest)
                except (SealError, PhotoMismatch, PathRefused) as exc:
                    # damaged on the drive: removed (the entry, never a link's target), so
                    # the next node that holds the photo writes it again
                    carry.refused += 1
                    log.warning("usb photo refused file=%s reason=%s action=removed", name, exc)
                    await io(shelf.unlink, name)
                    continue
                carry.taken += 1
                break
    log.info("usb photos taken=%d refused=%d", carry.taken, carry.refused)
    return carry


async def leave_photos(
    photos: Photos,
    keys: tuple[DataKey, ...],
    current: DataKey,
    folder: DriveFolder,
    keep_free: float,
    io: DriveIo,
) -> PhotoCarry:
    """Write every referenced photo this node holds that the drive lacks (thumbnails
    first), sealed under the `current` data key, each file written atomically."""
    carry = PhotoCarry()
    await photos.index.refresh()
    referenced = sorted(photos.index.referenced().items(), key=lambda i: (i[1][0] != THUMB, i[0]))
    with await io(folder.child, PHOTO_FOLDER, True) as shelf:
        present = set(await io(shelf.names))
        for digest, _ in referenced:
            names = _names(keys, digest)
            if not photos.store.has(digest) or any(name in present for _, name in names):
                continue
            data = await io(photos.store.read, digest)
            blob = seal_photo(current.secret, bytes.fromhex(current.key_id), current.epoch, data)
            name = next(name for key, name in names if key == current)
            await io(shelf.write_atomic, name, blob, keep_free)
            present.add(name)
            carry.written += 1
    log.info("usb photos written=%d", carry.written)
    return carry
