"""BLIP2's answers fit its position table (hostile-server issue, item 9): a 600-word question
is refused with the reason, and a long max_new_tokens is capped and said, instead of an
IndexError (on a GPU: a device-side assert that poisons the worker)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from gputui.models.blip2.runtime import Blip2Runtime, PromptTooLong


@pytest.fixture(scope="module")
def runtime(tiny_blip2_path: Path) -> Blip2Runtime:
    return Blip2Runtime.load({"path": str(tiny_blip2_path)}, [torch.device("cpu")], torch.float32)


@pytest.fixture
def image(tmp_path: Path) -> str:
    path = tmp_path / "img.png"
    Image.new("RGB", (32, 32), (200, 100, 50)).save(path)
    return str(path)


def test_a_question_longer_than_the_model_reads_is_refused_with_the_reason(runtime: Blip2Runtime, image: str) -> None:
    with pytest.raises(PromptTooLong) as e:
        runtime.generate({"image": image, "question": " ".join(["word"] * 600)}, lambda *a, **k: None, lambda: False)
    assert "shorten it" in e.value.user_message and str(runtime.max_positions - 1) in e.value.user_message


def test_a_long_answer_is_capped_and_said(runtime: Blip2Runtime, image: str) -> None:
    notices: list[str] = []

    def emit(text: str, **extra: object) -> None:
        if extra.get("notice"):
            notices.append(str(extra["notice"]))

    stats = runtime.generate({"image": image, "question": "hi",
                              "params": {"max_new_tokens": 400, "ignore_stop": True}}, emit, lambda: False)
    assert stats["prompt_tokens"] + stats["new_tokens"] <= runtime.max_positions
    assert len(notices) == 1 and "capped" in notices[0]
