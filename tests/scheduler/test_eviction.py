"""evict = "idle" (issue 26, item 3): a load that does not fit unloads our own idle models first,
least recently used first, and says so in the event log; never a pinned model, never one
answering, and nothing at all when unloading could not make room."""

from __future__ import annotations

import time
from dataclasses import replace

from gputui.core.placement import usable_bytes
from gputui.core.requests import ModelRequest
from tests.scheduler.conftest import World


def req(name: str, path: str, **kw) -> ModelRequest:  # type: ignore[no-untyped-def]
    return ModelRequest(name=name, kind="chatglm3", path=path, max_context=256, **kw)


async def two_loaded_and_tight(world: World, path: str, a_pinned: bool = False) -> int:
    """a and b loaded on the one GPU (b used since), and another user's process leaving room for
    a third model only once one of them is gone. Returns the third model's need."""
    s = world.scheduler
    s.steps.evict_idle = True
    s.steps.policy = replace(s.policy, allow_shared=True)  # bob's process shares the one GPU
    a = await s.load(req("a", path, pinned=a_pinned))
    b = await s.load(req("b", path))
    assert a.state == "ready" and b.state == "ready"
    b.last_used = time.time() + 1  # b answered last: a is the least recently used
    need = a.predicted_bytes or 0
    g = world.server.snapshot().gpus[0]
    world.server.allocate(g.uuid, 4242, usable_bytes(g, s.steps.policy) - need // 2, "bob", "python train.py")
    return need


def evicted(world: World) -> list[tuple[str, str]]:
    return [(e["model"], e["for_model"]) for e in world.scheduler.timeline.events if e["event"] == "evicting"]


async def test_the_least_recently_used_idle_model_makes_room_and_it_is_said(world_1gpu: World, model_path: str) -> None:
    await two_loaded_and_tight(world_1gpu, model_path)
    c = await world_1gpu.scheduler.load(req("c", model_path))
    models = world_1gpu.scheduler.models
    assert c.state == "ready", c.error
    assert (models["a"].state, models["b"].state) == ("unloaded", "ready")
    assert evicted(world_1gpu) == [("a", "c")]


async def test_a_pinned_model_is_never_the_one(world_1gpu: World, model_path: str) -> None:
    await two_loaded_and_tight(world_1gpu, model_path, a_pinned=True)
    c = await world_1gpu.scheduler.load(req("c", model_path))
    models = world_1gpu.scheduler.models
    assert c.state == "ready" and (models["a"].state, models["b"].state) == ("ready", "unloaded")


async def test_nothing_is_unloaded_when_that_could_not_make_room(world: World, model_path: str) -> None:
    """Two GPUs: our idle models on GPU 0, GPU 1 full of another user's work, and the new model
    asks for GPU 1: unloading ours could not help it, so nothing is unloaded."""
    s = world.scheduler
    s.steps.evict_idle = True
    for name in ("a", "b"):
        assert (await s.load(req(name, model_path, gpus=("0",)))).state == "ready"
    g1 = world.server.snapshot().gpus[1]
    world.server.allocate(g1.uuid, 4243, g1.free_bytes or 0, "carol", "python eval.py")
    c = await s.load(req("c", model_path, gpus=("1",)))
    assert c.state == "failed" and "refused at preflight" in (c.error or "")
    assert (s.models["a"].state, s.models["b"].state) == ("ready", "ready") and evicted(world) == []


async def test_without_the_setting_nothing_is_evicted(world_1gpu: World, model_path: str) -> None:
    await two_loaded_and_tight(world_1gpu, model_path)
    world_1gpu.scheduler.steps.evict_idle = False
    c = await world_1gpu.scheduler.load(req("c", model_path))
    assert c.state == "failed" and evicted(world_1gpu) == []
