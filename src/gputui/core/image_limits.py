"""What an image must be before anything decodes it, checked from its header alone: the API on
receipt (a bad image is the request's fault: a 400 before any model is asked) and BLIP2's worker
on opening (the dashboard and `gputui chat` hand it paths). One rule, one message, both places.

PIL is imported inside the check: core stays cheap to import for every process."""

from __future__ import annotations

from typing import IO

MAX_IMAGE_PIXELS = 64_000_000  # 8000 x 8000; a 20000 x 20000 image is refused before decoding


class ImageError(ValueError):
    @property
    def user_message(self) -> str:
        return str(self)


def check_header(source: str | IO[bytes], name: str) -> tuple[int, int]:
    """(width, height) of an image PIL can read and may decode; ImageError, naming `name`, if it
    cannot or must not (over the pixel limit: a decompression bomb is a few KiB on disk)."""
    from PIL import Image, UnidentifiedImageError

    # Our own limit is checked here and says how big; PIL's bomb check would refuse later
    # without saying, so it is off for the decode that follows this check.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(source) as im:
            w, h = im.size
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image PIL can read") from None
    except OSError as e:
        raise ImageError(f"{name}: cannot read the image ({e})") from None
    if w * h > MAX_IMAGE_PIXELS:
        raise ImageError(f"{name}: {w}x{h} is too large ({w * h // 1_000_000} megapixels, limit "
                         f"{MAX_IMAGE_PIXELS // 1_000_000}); resize it first")
    return w, h
