"""Issue 31 at the scheduler and its chat stream: a keep-alive unload never cuts a reply that
started while it waited in the queue (N5); "done" goes out only once the reply is on disk (N9);
two replies in one conversation are saved apart (N7). Each failed on the code before the fix."""

from __future__ import annotations

import asyncio

import pytest

from gputui.api.chat import ChatRequest, Journal
from gputui.core.requests import ModelRequest
from gputui.journal import conversation_path, read_transcript
from gputui.scheduler.client import LocalClient
from tests.fakes.fake_worker import Behaviour
from tests.scheduler.conftest import World
from tests.waiting import eventually


def req(name: str, path: str, **kw) -> ModelRequest:  # type: ignore[no-untyped-def]
    return ModelRequest(name=name, kind="chatglm3", path=path, max_context=256, **kw)


async def test_a_keep_alive_unload_queued_behind_a_long_load_never_cuts_a_reply_started_meanwhile(
        world: World, model_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from gputui.scheduler import scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "KEEP_ALIVE_TICK_S", 0.05)
    s = world.scheduler
    world.launcher.behaviours = [Behaviour(reply=" ".join(f"w{i}" for i in range(30)), token_delay=0.05),
                                 Behaviour(load_delay=1.5)]
    brief = await s.load(req("brief", model_path, keep_alive_s=0.3))
    slow = asyncio.ensure_future(s.load(req("slow", model_path)))  # holds the queue
    await eventually(lambda: "brief" in s._unloads_queued, 60, "the idle unload was never queued")
    assert not slow.done()  # so the unload waits behind the load
    words = [e.get("text", "") async for e in s.chat("brief", {"messages": []}) if e.get("event") == "token"]
    assert "".join(words).split() == [f"w{i}" for i in range(30)]  # the whole reply
    assert (await slow).state == "ready"
    # the queued unload looked again when its turn came: the model had been used, so it stayed
    # (it goes later, once idle for its keep-alive again)
    started = [e for e in s.timeline.events if e["event"] == "started" and e.get("command") == "idle_unload"]
    assert started and brief.state in ("ready", "unloading", "unloaded")
    await eventually(lambda: brief.state == "unloaded", 60, "the idle model never went")


async def test_done_goes_out_only_once_the_reply_is_on_disk(world: World, model_path: str) -> None:
    world.launcher.behaviours = [Behaviour(reply="a whole reply")]
    await world.scheduler.load(req("glm", model_path))
    client = LocalClient(world.scheduler)
    hi = {"role": "user", "content": "hi"}
    request = ChatRequest((hi,), journal=Journal("done-after-disk", (hi,), {"model": "glm"}))
    seen_on_disk_at_done = None
    async for ev in client.chat("glm", request):
        if ev.event == "done":
            t = read_transcript(conversation_path("done-after-disk"))
            seen_on_disk_at_done = [(m.role, m.content.strip(), m.complete) for m in t.messages]
    assert seen_on_disk_at_done == [("user", "hi", True), ("assistant", "a whole reply", True)]


async def test_two_replies_in_one_conversation_at_once_are_saved_apart(world: World, model_path: str) -> None:
    world.launcher.behaviours = [Behaviour(reply=" ".join(["AAA"] * 12), token_delay=0.02)]
    await world.scheduler.load(req("glm", model_path))
    client = LocalClient(world.scheduler)

    async def ask(text: str) -> None:
        message = {"role": "user", "content": text}
        request = ChatRequest((message,), journal=Journal("two-at-once", (message,), {"model": "glm"}))
        async for _ in client.chat("glm", request):
            pass

    await asyncio.gather(ask("first"), ask("second"))
    t = read_transcript(conversation_path("two-at-once"))
    replies = [m for m in t.messages if m.role == "assistant"]
    assert len(replies) == 2 and t.next_reply == 2  # numbered 0 and 1, not both 0
    assert all(m.complete and m.content.split() == ["AAA"] * 12 for m in replies)
