"""Every bad image is one clear error, never a crash of the worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from gputui.models.blip2.images import ImageError, open_image


def test_a_huge_image_is_refused_before_decoding(tmp_path: Path) -> None:
    p = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(p)  # 1-bit: small on disk, 400 megapixels
    with pytest.raises(ImageError, match="20000x20000 is too large"):
        open_image(p)


@pytest.mark.parametrize("make,words", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b"GIF89a" + b"\0" * 10), "cannot read|not an image"),
    (lambda p: p.write_text("just text"), "not an image"),
    (lambda p: p.mkdir(), "not a file"),
])
def test_bad_files_name_the_problem(tmp_path: Path, make, words: str) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "img.png"
    make(p)
    with pytest.raises(ImageError, match=words):
        open_image(p)


def test_a_good_image_comes_back_as_rgb(tmp_path: Path) -> None:
    p = tmp_path / "ok.png"
    Image.new("L", (10, 5), 7).save(p)
    im = open_image(p)
    assert im.mode == "RGB" and im.size == (10, 5)
