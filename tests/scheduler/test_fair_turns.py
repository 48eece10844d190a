"""A model's requests take fair turns between the clients that send them: a script's backlog
never makes the dashboard's chat wait for all of it."""

from __future__ import annotations

import asyncio

from gputui.core.requests import ModelRequest
from gputui.scheduler.turns import FairTurns
from tests.fakes.fake_worker import Behaviour
from tests.scheduler.conftest import World
from tests.waiting import eventually


async def test_the_dashboard_is_answered_after_the_reply_under_way_not_after_a_scripts_backlog(
        world: World, model_path: str) -> None:
    s = world.scheduler
    world.launcher.behaviours = [Behaviour(reply=" ".join(f"w{i}" for i in range(6)), token_delay=0.02)]
    await s.load(ModelRequest("glm", "chatglm3", model_path))
    order: list[str] = []

    async def ask(who: str, tag: str) -> None:
        async for e in s.chat("glm", {"messages": [{"role": "user", "content": tag}]}, asker=who):
            if e.get("event") == "token" and tag not in order:
                order.append(tag)

    script = [asyncio.create_task(ask("api", f"script{i}")) for i in range(5)]
    await eventually(lambda: order == ["script0"])  # the first is under way, four wait
    assert s.models["glm"].turns.waiting() == 4 and s.models["glm"].view().in_use == 5
    dashboard = asyncio.create_task(ask("local", "dashboard"))
    await asyncio.gather(*script, dashboard)
    assert order[:2] == ["script0", "dashboard"]  # its turn came next, not sixth
    assert sorted(order) == sorted([f"script{i}" for i in range(5)] + ["dashboard"])
    assert s.models["glm"].turns.running == 0 and s.models["glm"].turns.waiting() == 0


async def test_turns_alternate_between_askers_and_a_waiter_that_gives_up_leaves_no_trace() -> None:
    turns = FairTurns()
    served: list[str] = []
    gate = asyncio.Event()

    async def one(who: str, tag: str) -> None:
        async with turns.turn(who, slots=1):
            served.append(tag)
            await gate.wait()

    first = asyncio.create_task(one("a", "a0"))
    await eventually(lambda: served == ["a0"])
    tasks = [asyncio.create_task(one(w, t)) for w, t in (("a", "a1"), ("a", "a2"), ("b", "b0"), ("b", "b1"))]
    quitter = asyncio.create_task(one("c", "c0"))
    await eventually(lambda: turns.waiting() == 5)
    quitter.cancel()  # a client that went away while waiting
    await eventually(lambda: turns.waiting() == 4)
    gate.set()
    await asyncio.gather(first, *tasks)
    assert served == ["a0", "b0", "a1", "b1", "a2"]  # the one served least recently goes next
    assert turns.running == 0 and turns.waiting() == 0
