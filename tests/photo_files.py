"""Synthetic photos for the photo tests and the benchmark: noise (so a JPEG stays large,
like a real phone photo) with EXIF that a phone would write (time, device, GPS)."""

from __future__ import annotations

import io
import random

from PIL import Image

EXIF_IFD = 0x8769
GPS_IFD = 0x8825
MAKE, MODEL = 0x010F, 0x0110
DATETIME_ORIGINAL = 0x9003


def phone_photo(
    seed: int,
    size: tuple[int, int] = (2400, 1800),
    taken: str = "2026:11:02 09:15:42",
    quality: int = 92,
) -> bytes:
    """A JPEG of `size` with random blocks plus fine noise, and phone-like EXIF."""
    rng = random.Random(seed)
    small = Image.frombytes(
        "RGB", (size[0] // 48, size[1] // 48), rng.randbytes(size[0] // 48 * size[1] // 48 * 3)
    )
    image = small.resize(size, Image.Resampling.NEAREST)
    noise = Image.frombytes("L", size, rng.randbytes(size[0] * size[1]))
    image = Image.blend(image, Image.merge("RGB", (noise, noise, noise)), 0.15)
    exif = Image.Exif()
    exif[MAKE] = "RumahCam"
    exif[MODEL] = "Model X-1 serial 998877"
    exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = taken
    exif.get_ifd(GPS_IFD).update({1: "S", 2: (3.0, 47.0, 12.5), 3: "E", 4: (102.0, 15.0, 3.25)})
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, exif=exif.tobytes())
    return out.getvalue()


def large_phone_photo(seed: int) -> bytes:
    """A photo of 2-4 MB, as a phone camera writes them."""
    return phone_photo(seed, size=(3000, 2250), quality=92)
