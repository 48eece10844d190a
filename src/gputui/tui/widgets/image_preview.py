"""A small picture of an image drawn with half blocks, for terminals that show colour."""

from __future__ import annotations

import os

from rich.text import Text


def image_preview(path: str, width: int = 24) -> Text | None:
    """None for anything that is not a readable image file. Opened without blocking and checked
    to be a regular file first: a FIFO named like an image would hang the reader for ever."""
    from gputui.core.files import open_regular
    from gputui.core.image_limits import check_header

    try:
        with open_regular(os.path.expanduser(path)) as f:
            from PIL import Image

            check_header(f, path)  # the pixel limit the worker applies: no bomb decoded here either
            f.seek(0)
            with Image.open(f) as src:
                src.thumbnail((width, width * 2))
                im = src.convert("RGB")
        w, h = im.size
        h -= h % 2
        rgb = im.tobytes()  # R, G, B per pixel, row by row
    except Exception:  # noqa: BLE001 - no preview is fine; the worker reports bad images
        return None
    out = Text()
    for y in range(0, h, 2):
        for x in range(w):
            i, j = 3 * (y * w + x), 3 * ((y + 1) * w + x)
            top, bottom = rgb[i:i + 3], rgb[j:j + 3]
            out.append("▀", style=f"rgb({top[0]},{top[1]},{top[2]}) on rgb({bottom[0]},{bottom[1]},{bottom[2]})")
        out.append("\n")
    return out
