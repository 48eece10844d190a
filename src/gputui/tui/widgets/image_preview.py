"""A small picture of an image drawn with half blocks, for terminals that show colour."""

from __future__ import annotations

from rich.text import Text


def image_preview(path: str, width: int = 24) -> Text | None:
    try:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = 64_000_000
        with Image.open(path) as im:
            im.thumbnail((width, width * 2))
            im = im.convert("RGB")
            w, h = im.size
            h -= h % 2
            px = im.load()
    except Exception:  # noqa: BLE001 - no preview is fine; the worker reports bad images
        return None
    out = Text()
    for y in range(0, h, 2):
        for x in range(w):
            top, bottom = px[x, y], px[x, y + 1]
            out.append("▀", style=f"rgb({top[0]},{top[1]},{top[2]}) on rgb({bottom[0]},{bottom[1]},{bottom[2]})")
        out.append("\n")
    return out
