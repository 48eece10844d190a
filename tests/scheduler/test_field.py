"""Issue 30 at the client seam: R restarts the worker, keep-alive 0 unloads after the reply,
and a chat to a model its keep-alive unloaded brings it back (the one chat session both front
ends use). Each failed on the code before the fix."""

from __future__ import annotations

import asyncio

import pytest

from gputui.chat.session import ChatSession
from gputui.core.requests import ModelRequest, parse_duration
from gputui.scheduler.client import LocalClient
from tests.fakes.fake_worker import Behaviour
from tests.scheduler.conftest import World
from tests.waiting import eventually


def req(name: str, path: str, **kw) -> ModelRequest:  # type: ignore[no-untyped-def]
    return ModelRequest(name=name, kind="chatglm3", path=path, max_context=256, **kw)


async def test_reload_of_a_ready_model_starts_a_fresh_worker(world: World, model_path: str) -> None:
    client = LocalClient(world.scheduler)
    first = await client.load(req("glm", model_path))
    again = await client.reload("glm")
    assert again.ready and again.pid is not None and again.pid != first.pid


async def test_keep_alive_zero_unloads_after_the_reply_and_not_before(
        world: World, model_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from gputui.scheduler import scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "KEEP_ALIVE_TICK_S", 0.02)
    assert parse_duration("0") == 0
    for sliver in ("1e-300s", 0.5):
        with pytest.raises(ValueError, match="0 \\(unload after the reply\\)"):
            parse_duration(sliver)
    s = world.scheduler
    world.launcher.behaviours = [Behaviour(reply="one two", token_delay=0.05)]
    rec = await s.load(req("once", model_path, keep_alive_s=0.0))
    await asyncio.sleep(0.3)  # fifteen keep-alive ticks: ready and not yet asked, it stays
    assert rec.state == "ready"
    words = [e.get("text") async for e in s.chat("once", {"messages": []}) if e.get("event") == "token"]
    assert "".join(words).split() == ["one", "two"]
    await eventually(lambda: rec.state == "unloaded", 60, "keep-alive 0 did not unload after the reply")


async def test_a_chat_to_a_model_its_keep_alive_unloaded_loads_it_again_and_says_so(
        world: World, model_path: str) -> None:
    client = LocalClient(world.scheduler)
    first = await client.load(req("glm", model_path))
    await client.unload("glm")  # as its keep-alive would
    session = ChatSession(client, "glm", "chatglm3", journaled=False)
    events = [e async for e in session.send("are you there?")]
    assert events[0].event == "notice" and "loading it again" in events[0].text
    assert events[-1].event == "done"
    assert client.model("glm").ready and client.model("glm").pid != first.pid
