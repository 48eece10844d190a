"""One rule picks who describes an image for a conversation, in the chat pane and `gputui chat`
alike (they used different flags): a ready model whose kind describes images, unjournaled."""

from __future__ import annotations

from typing import Any

from gputui.api.views import ModelState, ModelView
from gputui.chat.session import ready_describer
from gputui.core.requests import ModelRequest


class Views:
    def __init__(self, *views: ModelView) -> None:
        self.views = list(views)

    def models(self) -> list[ModelView]:
        return self.views


def view(name: str, kind: str, state: ModelState) -> ModelView:
    return ModelView(ModelRequest(name, kind, f"/m/{name}"), state, state.value)


def test_only_a_ready_model_whose_kind_describes_images_is_picked() -> None:
    glm, blip = view("glm", "chatglm3", ModelState.READY), view("blip", "blip2", ModelState.LOADING)
    client: Any = Views(glm, blip)
    assert ready_describer(client) is None  # loading is not ready
    client.views[1] = view("blip", "blip2", ModelState.READY)
    picked = ready_describer(client)
    assert picked is not None and picked.model == "blip" and picked.conversation_id is None  # not journaled
