"""Greedy replies with the GPU a step ahead of the host (decode_graph.GreedyRunAhead) choose the
same tokens as the step-by-step loop, stop where it stops, and are refused at warm-up when they
would not. On the CPU the same contract runs without graphs (EagerRunAhead), over the fused
step's PyTorch twin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from gputui.models.common.decode_graph import EagerRunAhead


class Stepper:
    """The graph step's interface (token, position) -> logits, run eagerly."""

    def __init__(self, fn: Any) -> None:
        self.step_fn = fn

    def __call__(self, token_id: int, position: int) -> torch.Tensor:
        return self.step_fn(torch.tensor([[token_id]]), torch.tensor([position]))


@pytest.fixture
def runtime(tiny_chatglm3_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from gputui.models.glm import glm_decode
    from gputui.models.glm.chatglm3_runtime import ChatGLM3Runtime

    monkeypatch.setattr(glm_decode, "triton_available", lambda: True)  # the CPU runs the torch twin
    rt = ChatGLM3Runtime.load({"path": str(tiny_chatglm3_path), "max_context": 128}, [torch.device("cpu")],
                              torch.float32)
    rt.warm_up()
    rt.graph_step, rt.decode_kind = Stepper(rt._fused_step()), "fused"
    return rt


def reply(rt: Any, n: int, ignore_stop: bool = True, cancel_after: int | None = None) -> tuple[list[int], dict]:
    pieces: list[str] = []
    stats = rt._decode(rt.tok.chat_ids([{"role": "user", "content": "tell me"}]), n, 0.0, 1.0,
                       lambda text, **_k: pieces.append(text),
                       (lambda: len(rt.last_tokens) >= cancel_after) if cancel_after else (lambda: False),
                       ignore_stop=ignore_stop)
    return list(rt.last_tokens), stats


def test_running_ahead_chooses_the_same_tokens(runtime: Any) -> None:
    runtime._set_up_run_ahead(make=EagerRunAhead)
    assert runtime.run_ahead is not None and runtime.run_ahead_error is None
    for n in (1, 2, 3, 17):
        ahead, stats = reply(runtime, n)
        assert "run ahead" in stats["decode_path"]
        keep, runtime.run_ahead = runtime.run_ahead, None
        plain, _ = reply(runtime, n)
        runtime.run_ahead = keep
        assert ahead == plain and len(ahead) == n == stats["new_tokens"]
    # cancelled after 5 tokens: it stops there too
    ahead, stats = reply(runtime, 30, cancel_after=5)
    assert len(ahead) == 5 and stats["finish"] == "cancelled"


def test_a_run_ahead_that_chooses_otherwise_is_refused(runtime: Any) -> None:
    def least_likely(step_fn: Any, device: torch.device) -> EagerRunAhead:
        return EagerRunAhead(lambda ids, pos: -step_fn(ids, pos), device)

    runtime._set_up_run_ahead(make=least_likely)
    assert runtime.run_ahead is None
    assert "chose other tokens" in (runtime.run_ahead_error or "")
    assert runtime.info()["run_ahead"] is False
