"""Everything that crosses the client seam survives the wire: to_json, through json (as the
socket carries it), and from_json give back an equal value; and what the wire must refuse in a
chat request is refused with one line naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gputui.api.chat import BadChatRequest, ChatEvent, ChatRequest, Journal
from gputui.api.views import Event, ModelState, ModelView, PlanLine, ProfileStep, UnloadResult
from gputui.core.placement import GpuShare
from gputui.core.profiles import Profile
from gputui.core.requests import ModelRequest

REQUEST = ModelRequest("glm", "chatglm3", "/m/glm", gpus=("auto",), max_context=4096,
                       generation={"temperature": 0.2}, keep_alive_s=30.0)
VIEW = ModelView(REQUEST, ModelState.READY, "ready",
                 (GpuShare(0, "GPU-a", 80 << 30, 12 << 30, (0, 14), "node-a"), GpuShare(1, "GPU-b", 80 << 30, 11 << 30, (14, 28))),
                 23 << 30, 22 << 30, 4242, None, 3.5, 1.7e9, 1.7e9 + 5, 1, {"decode": "fused"},
                 {"weights_s": 1.2}, 30.0, 1.7e9)


def wire(value: Any) -> Any:
    return json.loads(json.dumps(value, allow_nan=False))


@pytest.mark.parametrize("value", [
    VIEW, ModelView(REQUEST, ModelState.FAILED, "failed", error="refused at preflight: no room"),
    Event(7, 1.7e9, "model", "glm", VIEW.to_json()), UnloadResult("glm", True, 1 << 30, 1 << 30, 0.4, 0),
    PlanLine("glm", True, 0, 12 << 30, "fits on GPU 0"), ProfileStep("glm", "loaded", "ready on GPU 0 in 2.1s"),
    ChatEvent("text", "héllo ␤"), ChatEvent("done", stats={"new_tokens": 4, "finish": "stop", "ttft_s": 0.01}),
    ChatEvent("error", "its worker crashed"),
    ChatRequest(({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}), params={"seed": 3},
                journal=Journal("glm-1", ({"role": "user", "content": "hi"},), {"model": "glm"})),
    ChatRequest(image="/pics/cat.png", question="what colour?", params={"max_new_tokens": 8}),
], ids=lambda v: type(v).__name__)
def test_a_value_comes_back_equal_from_the_wire(value: Any) -> None:
    assert type(value).from_json(wire(value.to_json())) == value


def test_the_model_request_and_profile_come_back_equal_too() -> None:
    assert ModelRequest.from_json(wire(REQUEST.to_json())) == REQUEST
    profile = Profile("two", (REQUEST, ModelRequest("blip", "blip2", "/m/blip", gpus=("1",))))
    assert Profile.from_json(wire(profile.to_json())) == profile


@pytest.mark.parametrize(("data", "named"), [
    ([], "request must be an object"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages"),
    ({"params": []}, "params"),
    ({"image": 7}, "image"),
    ({"journal": "glm-1"}, "journal"),
    ({"journal": {"id": "x", "append": "hi"}}, "journal.append"),
])
def test_a_chat_request_the_wire_cannot_use_is_refused_naming_the_field(data: Any, named: str) -> None:
    with pytest.raises(BadChatRequest, match=named):
        ChatRequest.from_json(data)


def test_a_chat_event_this_version_cannot_read_becomes_an_error_event_not_a_crash() -> None:
    ev = ChatEvent.from_json({"event": "token", "text": "x"})  # an older server's wire form
    assert ev.event == "error" and "cannot read" in ev.text


def test_the_worker_gets_the_conversation_or_the_image_never_both() -> None:
    talk = ChatRequest(({"role": "user", "content": "hi"},), params={"seed": 1}).for_worker()
    look = ChatRequest(image="/p.png", question="what?").for_worker()
    assert talk == {"params": {"seed": 1}, "messages": [{"role": "user", "content": "hi"}]}
    assert look == {"params": {}, "image": "/p.png", "question": "what?"}
