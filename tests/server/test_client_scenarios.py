"""One body of scenarios, run against both clients of the seam (gputui.api.Client): the
in-process LocalClient and the RemoteClient of a real `gputui serve --demo`. Whatever a front
end does through one, it can do through the other, with the same answers (issue 25, item 8).
Both run real tiny workers on the CPU over the simulated two-GPU demo server."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gputui.api.chat import ChatEvent, ChatRequest, Journal
from gputui.api.client import Client, CommandRefused
from gputui.core.profiles import Profile
from gputui.core.requests import ModelRequest
from gputui.journal import conversation_path, read_transcript
from tests.waiting import eventually

pytestmark = pytest.mark.slow
GLM = ModelRequest("glm", "chatglm3", "demo:chatglm3", max_context=256, generation={"temperature": 0})


@pytest.fixture(params=["local", "remote"])
async def client(request: pytest.FixtureRequest, private_folders: Path) -> AsyncIterator[Client]:
    if request.param == "local":
        from gputui.hardware.simulated import demo_server
        from gputui.scheduler.client import LocalClient
        from gputui.scheduler.factory import make_scheduler
        from gputui.scheduler.timeline import Timeline

        local = LocalClient(make_scheduler(demo_server(), spare=False, timeline=Timeline()))
        await local.start()
        yield local
        await local.close()
        return
    from gputui.remote.client import RemoteClient
    from tests.server.conftest import start_server

    served = start_server(private_folders)
    remote = await RemoteClient.connect(served.socket)
    yield remote
    await remote.close()
    served.proc.send_signal(signal.SIGTERM)
    served.proc.wait(60)


HI = {"role": "user", "content": "hi"}


async def chat(client: Client, name: str, request: ChatRequest) -> list[ChatEvent]:
    return [ev async for ev in client.chat(name, request)]


async def test_load_chat_and_unload(client: Client) -> None:
    view = await client.load(GLM)
    assert view.ready and view.pid is not None and view.gpu_label in ("0", "1")
    assert client.model("glm") is not None and client.model("glm").ready  # type: ignore[union-attr]
    assert dict(client.worker_pids())[view.pid] == "glm"
    events = await chat(client, "glm", ChatRequest((HI,), params={"max_new_tokens": 4, "ignore_stop": True}))
    assert [e.event for e in events][-1] == "done" and events[-1].stats["new_tokens"] == 4
    assert sum(1 for e in events if e.event == "text" and e.text) >= 1
    result = await client.unload("glm")
    assert result.returned and client.model("glm").state.value == "unloaded"  # type: ignore[union-attr]
    assert view.pid not in client.worker_pids()


async def test_a_chat_to_a_model_not_loaded_is_an_error_event(client: Client) -> None:
    events = await chat(client, "nothing", ChatRequest((HI,)))
    assert [e.event for e in events] == ["error"] and "nothing" in events[0].text
    with pytest.raises(CommandRefused, match="no model named"):
        await client.unload("nothing")


async def test_a_journaled_chat_is_on_disk_when_done_arrives(client: Client) -> None:
    await client.load(GLM)
    request = ChatRequest((HI,), params={"max_new_tokens": 3, "ignore_stop": True},
                          journal=Journal("scenario-journal", (HI,), {"model": "glm"}))
    async for ev in client.chat("glm", request):
        if ev.event == "done":
            t = read_transcript(conversation_path("scenario-journal"))
            assert [m.role for m in t.messages] == ["user", "assistant"] and t.messages[1].complete


async def test_cancel_stops_a_reply_within_a_token(client: Client) -> None:
    await client.load(GLM)
    stream = client.chat("glm", ChatRequest(({"role": "user", "content": "a long story"},),
                                            params={"max_new_tokens": 2000, "ignore_stop": True}))
    tokens, last = 0, None
    async for ev in stream:
        if ev.event == "text" and ev.text:
            tokens += 1
            if tokens == 3:
                await stream.cancel()
        last = ev
    assert last is not None and last.event == "done" and last.stats.get("finish") == "cancelled"
    assert last.stats["new_tokens"] < 2000


async def test_move_reload_and_the_profile_round_trip(client: Client) -> None:
    first = await client.load(GLM)
    target = "1" if first.gpu_label == "0" else "0"
    moved = await client.move("glm", target)
    assert moved.ready and moved.gpu_label == target and moved.pid != first.pid
    again = await client.reload("glm")
    assert again.ready and again.pid not in (first.pid, moved.pid)
    profile = await client.current_profile("scenario")
    assert [m.name for m in profile.models] == ["glm"]
    plan = await client.plan_profile(profile)
    assert [line.model for line in plan] == ["glm"]
    steps = await client.apply_profile(Profile.from_json(profile.to_json()))
    assert [(s.model, s.outcome) for s in steps] == [("glm", "kept")]


async def test_events_follow_from_a_sequence_number(client: Client) -> None:
    await client.load(GLM)
    since = client.last_seq
    seen: list[Any] = []

    async def follow() -> None:
        async for ev in client.events(since):
            seen.append(ev)

    follower = asyncio.ensure_future(follow())
    await client.unload("glm")
    await eventually(lambda: any(e.type == "timeline" and e.data.get("event") == "unloaded" for e in seen), 60,
                     "the unload never came through the event stream")
    follower.cancel()
    assert all(e.seq > since for e in seen)  # nothing from before: the stream starts where asked
    assert not any(e.type == "timeline" and e.data.get("event") == "ready" for e in seen)
