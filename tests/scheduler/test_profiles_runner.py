"""Profiles against a (simulated) machine: the dry-run plan, applying, comparing and saving,
with a model split over two GPUs among them (fake workers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gputui.core.kinds import kind_named, split_costs
from gputui.core.placement import choose_gpu
from gputui.core.profiles import Profile
from gputui.core.requests import ModelRequest
from gputui.core.units import GiB
from gputui.scheduler.profiles_runner import (
    apply_profile,
    compare_profile,
    current_profile,
    plan_profile,
)
from tests.scheduler.conftest import World


def profile(path: str) -> Profile:
    return Profile("p", (
        ModelRequest("split", "chatglm3", path, ("0", "1"), max_context=256),
        ModelRequest("solo", "chatglm3", path, ("1",), max_context=256),
    ))


async def test_the_plan_counts_a_split_models_share_on_each_gpu(world: World, model_path: str) -> None:
    snap = world.server.snapshot()
    plan = await plan_profile(profile(model_path), snap, world.scheduler.policy, world.launcher)
    assert [line.fits for line in plan] == [True, True]
    assert plan[0].message.startswith("fits on GPU 0+1: needs ")
    # fill GPU 1 so that the second model fits there alone, but not beside the split's share
    policy = world.scheduler.policy
    costs = split_costs(kind_named("chatglm3"), Path(model_path), "bfloat16", 256)
    share_on_1 = choose_gpu(snap, 0, ("0", "1"), policy, set(), costs).shares[1].need_bytes
    g1 = world.server.gpus[1]
    room = policy.margin_bytes + plan[1].need_bytes + share_on_1 - 1
    world.server.allocate(g1.uuid, 9, g1.total_bytes - room, "bob", "hog")
    snap = world.server.snapshot()
    alone = await plan_profile(Profile("q", (profile(model_path).models[1],)), snap, world.scheduler.policy,
                               world.launcher)
    assert alone[0].fits  # the second model fits GPU 1 as it is now
    plan = await plan_profile(profile(model_path), snap, world.scheduler.policy, world.launcher)
    assert plan[0].fits and not plan[1].fits  # but not after the split took its share there
    assert plan[1].message.startswith("GPU 1 (")


async def test_apply_compare_and_save_keep_a_split_as_the_user_listed_it(world: World, model_path: str) -> None:
    p = profile(model_path)
    steps = await apply_profile(p, world.scheduler)
    assert [s.outcome for s in steps] == ["loaded", "loaded"]
    started = len(world.launcher.started)
    again = await apply_profile(p, world.scheduler)
    assert [(s.model, s.outcome, s.message) for s in again] == [
        ("split", "kept", "already placed as asked"), ("solo", "kept", "already placed as asked")]
    assert len(world.launcher.started) == started  # nothing reloaded
    followed = [e.data["outcome"] for e in world.scheduler.events._ring if e.data.get("event") == "profile_step"]
    assert followed == ["loaded", "loaded", "kept", "kept"]  # every client following the events saw it
    snap = world.server.snapshot()
    assert compare_profile(p, world.scheduler.views(), snap).ok == ("split", "solo")
    saved = current_profile(world.scheduler.views(), "mine")
    uuids = [g.uuid for g in world.server.gpus]
    assert saved.models[0].gpus == (uuids[0], uuids[1]) and saved.models[0].gpu_index_hint == 0
    await world.scheduler.move("split", "0")
    assert compare_profile(p, world.scheduler.views(), world.server.snapshot()).misplaced == ("split",)


async def test_a_profile_that_does_not_fit_stops_at_the_first_failure(world: World, model_path: str) -> None:
    world.server.allocate(world.server.gpus[1].uuid, 9, world.server.gpus[1].total_bytes - 1 * GiB // 4, "bob", "hog")
    steps = await apply_profile(profile(model_path), world.scheduler)
    assert [s.outcome for s in steps] == ["failed", "skipped"]  # the second was never tried
    assert "GPU 1" in steps[0].message and world.scheduler.view("solo") is None


async def test_the_dry_run_reads_costs_where_the_load_would(world: World, model_path: str) -> None:
    """Through the launcher, as the load's preflight does (a Ray node reads its own path): a
    dry run that read the headers here said "fits" for a model its node could not read."""
    from gputui.core.checkpoint_info import CheckpointError

    async def on_another_node(request: ModelRequest, dtype: str) -> Any:
        raise CheckpointError(f"{request.path}: no such folder (read on node b)")

    world.launcher.read_costs = on_another_node  # type: ignore[method-assign]
    plan = await plan_profile(profile(model_path), world.server.snapshot(), world.scheduler.policy, world.launcher)
    assert [line.fits for line in plan] == [False, False] and "read on node b" in plan[0].message
