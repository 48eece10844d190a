"""BLIP2 decodes with our OPT step (a CUDA graph on a GPU; here the same step, eagerly, in
float32) and answers exactly what transformers' generate() answers, greedy; a step that
computes something else is refused at warm-up and generate() decodes instead."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from gputui.models.blip2.opt_decode import OptDecodeStep
from gputui.models.blip2.runtime import Blip2Runtime


def load(path: Path) -> Blip2Runtime:
    torch.manual_seed(0)
    rt = Blip2Runtime.load({"path": str(path), "max_context": 96}, [torch.device("cpu")], torch.float32)
    rt.warm_up()
    return rt


def answer(rt: Blip2Runtime, image: str, question: str, ignore_stop: bool, n: int = 12) -> tuple[str, int]:
    stats = rt.generate({"image": image, "question": question,
                         "params": {"max_new_tokens": n, "ignore_stop": ignore_stop}}, lambda *a, **k: None, lambda: False)
    return stats["text"], stats["new_tokens"]


@pytest.fixture
def image(tmp_path: Path) -> str:
    path = tmp_path / "img.png"
    Image.new("RGB", (32, 32), (200, 100, 50)).save(path)
    return str(path)


def test_the_step_answers_what_generate_answers(tiny_blip2_path: Path, image: str) -> None:
    rt = load(tiny_blip2_path)
    assert rt.decode_kind == "step" and rt.decode_error is None
    assert rt.decode_check is not None and rt.decode_check < 1e-4
    ours = {(q, stop): answer(rt, image, q, stop) for q in ("", "what is it?") for stop in (True, False)}
    step, rt.step = rt.step, None  # the same runtime, decoding with generate()
    theirs = {(q, stop): answer(rt, image, q, stop) for q in ("", "what is it?") for stop in (True, False)}
    rt.step = step
    assert ours == theirs
    assert ours[("what is it?", True)][1] == 12 and ours[("what is it?", True)][0]


def test_a_step_that_computes_something_else_is_refused(tiny_blip2_path: Path, image: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real = OptDecodeStep.__call__

    def off(self: OptDecodeStep, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return real(self, ids, pos + 1)  # one position off

    monkeypatch.setattr(OptDecodeStep, "__call__", off)
    rt = load(tiny_blip2_path)
    assert rt.step is None and rt.decode_kind == "generate"
    assert "disagrees with transformers' forward" in (rt.decode_error or "")
    assert answer(rt, image, "what is it?", True)[1] == 12  # generate() still answers


def test_the_answer_fits_the_static_cache(tiny_blip2_path: Path, image: str) -> None:
    rt = load(tiny_blip2_path)
    notices: list[str] = []
    stats = rt.generate({"image": image, "question": "hi", "params": {"max_new_tokens": 400, "ignore_stop": True}},
                        lambda text, **extra: notices.append(str(extra.get("notice", ""))), lambda: False)
    assert stats["prompt_tokens"] + stats["new_tokens"] == rt.context == 96
    assert any("capped" in n for n in notices)


def test_the_step_takes_the_graph_steps_id_shape(tiny_blip2_path: Path) -> None:
    """decode_graph.GraphDecodeStep hands its step ids of shape [1, 1] (ChatGLM3's); the OPT
    step reads one id whatever its shape."""
    rt = load(tiny_blip2_path)
    step = rt.step.step_fn
    flat = step(torch.tensor([5]), torch.tensor([3])).clone()
    assert torch.equal(step(torch.tensor([[5]]), torch.tensor([3])), flat)
