"""The half-block picture of an image in the chat: top pixel as the glyph, bottom as its background."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from gputui.tui.widgets.image_preview import image_preview


def test_each_cell_shows_two_pixel_rows(tmp_path: Path) -> None:
    img = Image.new("RGB", (4, 4), (0, 255, 0))
    for x in range(4):
        img.putpixel((x, 0), (255, 0, 0))
        img.putpixel((x, 1), (0, 0, 255))
    path = tmp_path / "stripes.png"
    img.save(path)
    text = image_preview(str(path), width=4)
    assert text is not None
    assert text.plain == "▀▀▀▀\n▀▀▀▀\n"
    styles = [str(span.style) for span in text.spans]
    assert styles[0] == "rgb(255,0,0) on rgb(0,0,255)"  # row 0 over row 1
    assert styles[4] == "rgb(0,255,0) on rgb(0,255,0)"  # rows 2 and 3


def test_a_file_that_is_not_an_image_gives_no_preview(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("not a picture")
    assert image_preview(str(path)) is None


def test_a_fifo_named_like_an_image_is_no_preview_and_no_hang(tmp_path: Path) -> None:
    import os
    import threading

    fifo = tmp_path / "cat.png"
    os.mkfifo(fifo)
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(image_preview(str(fifo))), daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "the preview blocked on a FIFO"
    assert result == [None]
