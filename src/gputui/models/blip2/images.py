"""Opening a user's image safely: every bad file is a clear one-line error, never a crash."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from gputui.core.image_limits import MAX_IMAGE_PIXELS, ImageError, check_header

__all__ = ["MAX_FILE_BYTES", "MAX_IMAGE_PIXELS", "ImageError", "open_image"]

MAX_FILE_BYTES = 200 << 20


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    p = Path(path).expanduser()
    if not p.exists():
        raise ImageError(f"{p}: no such file")
    if not p.is_file():
        raise ImageError(f"{p}: not a file")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise ImageError(f"{p}: {p.stat().st_size >> 20} MiB is too large for an image (limit {MAX_FILE_BYTES >> 20} MiB)")
    check_header(str(p), str(p))
    try:
        with Image.open(p) as im:
            return im.convert("RGB")
    except Image.DecompressionBombError:
        raise ImageError(f"{p}: image too large to decode safely; resize it first") from None
    except OSError as e:
        raise ImageError(f"{p}: cannot read the image ({e})") from None
