"""The line under the models table says what the user needs to know about the selected model."""

from __future__ import annotations

from typing import Any

from gputui.api.views import ModelState, ModelView
from gputui.core.requests import ModelRequest
from gputui.tui.widgets.models_panel import model_note, model_row


def rec(state: str = "ready", stage: str = "ready", ready_report: dict[str, Any] | None = None,
        **kw: Any) -> ModelView:
    return ModelView(ModelRequest("glm", "chatglm3", "/m"), ModelState(state), stage,
                     runtime=(ready_report or {}).get("runtime") or {}, **kw)


def test_a_failure_is_explained() -> None:
    assert model_note(rec(state="failed", error="refused at preflight: GPU 0 ...")) == (
        "glm: refused at preflight: GPU 0 ...", "")


def test_a_slow_decode_path_is_explained_and_a_fast_one_says_nothing() -> None:
    slow = rec(ready_report={"runtime": {"decode": "stock", "fused_error": "triton is not installed"}})
    text, style = model_note(slow)
    assert "stock decode graph" in text and "triton is not installed" in text and style
    assert model_note(rec(ready_report={"runtime": {"decode": "fused", "fused_error": None}})) == ("", "")


def test_a_loading_model_shows_its_stage() -> None:
    row = model_row(rec(state="loading", stage="loading_weights"))
    assert row[2].plain == "loading_weights"


def test_a_split_model_says_where_its_layers_are_and_why_it_decodes_slower() -> None:
    note = ("split over 2 GPUs (layers 0-13 | 14-27); decodes eagerly: the fused step and the CUDA graph "
            "run on one GPU")
    text, style = model_note(rec(ready_report={"runtime": {"decode": "eager", "decode_note": note}}))
    assert text == f"glm: {note}" and style == "italic yellow"
    fast = "split over 2 GPUs (layers 0-13 | 14-27): one CUDA graph per GPU"
    assert model_note(rec(ready_report={"runtime": {"decode": "fused", "decode_note": fast}})) == (f"glm: {fast}", "dim")
