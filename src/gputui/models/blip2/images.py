"""Opening a user's image safely: every bad file is a clear one-line error, never a crash."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

MAX_IMAGE_PIXELS = 64_000_000  # 8000 x 8000; a 20000 x 20000 image is refused before decoding
MAX_FILE_BYTES = 200 << 20


class ImageError(ValueError):
    @property
    def user_message(self) -> str:
        return str(self)


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    p = Path(path).expanduser()
    if not p.exists():
        raise ImageError(f"{p}: no such file")
    if not p.is_file():
        raise ImageError(f"{p}: not a file")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise ImageError(f"{p}: {p.stat().st_size >> 20} MiB is too large for an image (limit {MAX_FILE_BYTES >> 20} MiB)")
    # Our own pixel limit below is checked from the header, before any decoding, and gives
    # the size in the message; PIL's bomb check would refuse without saying how big.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(p) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ImageError(f"{p}: {w}x{h} is too large ({w * h // 1_000_000} megapixels, limit "
                                 f"{MAX_IMAGE_PIXELS // 1_000_000}); resize it first")
            return im.convert("RGB")
    except UnidentifiedImageError:
        raise ImageError(f"{p}: not an image PIL can read") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{p}: image too large to decode safely; resize it first") from None
    except OSError as e:
        raise ImageError(f"{p}: cannot read the image ({e})") from None
