"""Re-encoding a house photo: any camera image in, a small JPEG and a thumbnail out.

Pillow decodes the upload (a phone's JPEG, PNG, WebP...), turns it upright by its EXIF
orientation, scales it to at most 1600 px on the long side and writes a baseline JPEG,
lowering the quality until it is about 300 KB at most; a 320 px thumbnail is made the
same way. Only pixels are written: no EXIF, GPS, maker notes, ICC or XMP survive, so the
device and the place a photo was taken never leave the node. The time it was taken
(EXIF DateTimeOriginal, else DateTime) is read first and returned as a field.

Bad input raises `PhotoRejected` with a short `reason` key (too_large, not_image,
truncated, too_many_pixels); nothing else escapes.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_UPLOAD = 25 * 1024 * 1024  # a phone's largest JPEG is well under this
MAX_PIXELS = 80_000_000  # 80 MP: above any phone camera, below a decompression bomb
FULL_EDGE = 1600
THUMB_EDGE = 320
FULL_TARGET = 300 * 1024  # bytes: lower the quality until the photo fits
THUMB_TARGET = 30 * 1024
QUALITIES = (82, 75, 68, 60, 52, 45)
EXIF_DATETIME = 0x0132
EXIF_IFD = 0x8769
EXIF_DATETIME_ORIGINAL = 0x9003
_EXIF_TIME = re.compile(r"(\d{4}):(\d{2}):(\d{2}) (\d{2}):(\d{2}):(\d{2})")


class PhotoRejected(Exception):
    """An upload that is not a usable photo; `reason` is a short key for the catalogue."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Encoded:
    """A re-encoded photo: the JPEG, its thumbnail, the size and when it was taken."""

    full: bytes
    thumb: bytes
    width: int
    height: int
    taken: str | None  # "YYYY-MM-DDTHH:MM:SS" (camera local time), or None


def _taken(image: Image.Image) -> str | None:
    exif = image.getexif()
    raw = exif.get_ifd(EXIF_IFD).get(EXIF_DATETIME_ORIGINAL) or exif.get(EXIF_DATETIME)
    match = _EXIF_TIME.fullmatch(str(raw).strip().strip("\x00")) if raw else None
    if match is None:
        return None
    y, mo, d, h, mi, s = match.groups()
    return f"{y}-{mo}-{d}T{h}:{mi}:{s}"


def _jpeg(image: Image.Image, edge: int, target: int) -> tuple[bytes, tuple[int, int]]:
    """`image` scaled to `edge` px at most, as the best-quality JPEG under `target` bytes
    (the lowest quality tried when none is), and its size in pixels."""
    scaled = image.copy()
    scaled.thumbnail((edge, edge), Image.Resampling.LANCZOS)
    data = b""
    for quality in QUALITIES:
        out = io.BytesIO()
        scaled.save(out, "JPEG", quality=quality, optimize=True)
        data = out.getvalue()
        if len(data) <= target:
            break
    return data, scaled.size


def reencode(data: bytes) -> Encoded:
    """The photo in `data` re-encoded for storage; PhotoRejected when it cannot be."""
    if len(data) > MAX_UPLOAD:
        raise PhotoRejected("too_large", f"photo is {len(data)} bytes, at most {MAX_UPLOAD}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise PhotoRejected(
                    "too_many_pixels", f"photo is {image.width}x{image.height}, too many pixels"
                )
            taken = _taken(image)
            image.load()
    except PhotoRejected:
        raise
    except UnidentifiedImageError:
        raise PhotoRejected("not_image", "not an image Pillow can read") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise PhotoRejected("too_many_pixels", str(exc)) from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt pixel data
        raise PhotoRejected("truncated", f"image data is damaged or cut short: {exc}") from None
    upright = ImageOps.exif_transpose(image).convert("RGB")
    full, (width, height) = _jpeg(upright, FULL_EDGE, FULL_TARGET)
    thumb, _ = _jpeg(upright, THUMB_EDGE, THUMB_TARGET)
    return Encoded(full, thumb, width, height, taken)
