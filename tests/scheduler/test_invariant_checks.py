"""The invariant checker itself catches each kind of breach (so a green run means something)."""

from __future__ import annotations

import os

import pytest

from gputui.core.requests import ModelRequest
from gputui.core.units import GiB, MiB
from tests.invariants import check_invariants
from tests.scheduler.conftest import World


async def test_an_orphan_worker_is_caught(world: World) -> None:
    handle = await world.launcher.start_worker()  # a worker no model owns
    with pytest.raises(AssertionError, match="orphan"):
        check_invariants(world.scheduler, settled=True)
    handle.kill()
    await handle.exited.wait()


async def test_memory_held_by_a_worker_whose_model_is_down_is_caught(world: World, model_path: str) -> None:
    rec = await world.scheduler.load(ModelRequest("m", "chatglm3", model_path, max_context=256))
    assert rec.state == "ready"
    pid = rec.pid
    rec.state = "failed"  # as if the scheduler forgot to end it
    with pytest.raises(AssertionError):
        check_invariants(world.scheduler, settled=True)
    rec.state = "ready"
    assert pid is not None


async def test_the_dashboard_holding_gpu_memory_is_caught(world: World) -> None:
    world.server.allocate(world.server.gpus[0].uuid, os.getpid(), 1 * MiB, "you", "gputui")
    with pytest.raises(AssertionError, match="dashboard"):
        check_invariants(world.scheduler, settled=True)
    world.server.release(os.getpid())


async def test_placing_past_capacity_minus_headroom_is_caught(world: World, model_path: str) -> None:
    rec = await world.scheduler.load(ModelRequest("m", "chatglm3", model_path, max_context=256))
    assert rec.state == "ready"
    policy = world.scheduler.policy
    # the same placement, judged under a 4 GiB reserve for other users, is over the line
    world.scheduler.policy = type(policy)(reserve_bytes=4 * GiB, margin_bytes=policy.margin_bytes)
    with pytest.raises(AssertionError, match="over capacity"):
        check_invariants(world.scheduler, settled=True)
    world.scheduler.policy = policy
