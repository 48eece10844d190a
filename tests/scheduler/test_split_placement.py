"""A model split over the GPUs the user listed: booked, watched, unloaded and moved as one,
on every GPU it touches (fake workers on a simulated server)."""

from __future__ import annotations

from pathlib import Path

from gputui.core.requests import ModelRequest
from gputui.core.units import GiB
from tests.scheduler.conftest import World
from tests.waiting import eventually


def req(path: str, gpus: tuple[str, ...], kind: str = "chatglm3") -> ModelRequest:
    return ModelRequest(name="glm", kind=kind, path=path, gpus=gpus, max_context=256)


def holders(world: World) -> dict[int, list[int]]:
    return {g.index: [p.pid for p in g.processes] for g in world.server.snapshot().gpus}


async def test_a_split_model_gets_both_gpus_and_its_layer_ranges(world: World, model_path: str) -> None:
    rec = await world.scheduler.load(req(model_path, ("1", "0")))
    assert rec.state == "ready", rec.error
    assert rec.placement.split and rec.placement.label == "1+0"
    spec = world.launcher.started[-1].spec
    uuids = [g.uuid for g in world.server.gpus]
    assert spec["gpu_uuids"] == [uuids[1], uuids[0]]  # in the order listed: the worker's cuda:0 is GPU 1
    assert spec["layer_split"] == [[0, 1], [1, 2]]  # the tiny model's two layers, one each
    assert holders(world) == {0: [rec.pid], 1: [rec.pid]}
    # each GPU holds its own share; the total is what the dashboard shows as predicted
    assert rec.measured_bytes == rec.predicted_bytes == sum(s.need_bytes for s in rec.placement.shares)
    assert rec.predicted_bytes > rec.estimate.total_bytes  # a second context and workspace


async def test_unloading_a_split_model_waits_for_both_gpus(world: World, model_path: str) -> None:
    rec = await world.scheduler.load(req(model_path, ("0", "1")))
    free_before = sum(world.server.free_bytes(g.uuid) for g in world.server.gpus)
    result = await world.scheduler.unload("glm")
    assert result["returned"] and holders(world) == {0: [], 1: []}
    assert result["returned_bytes"] == rec.measured_bytes
    assert sum(world.server.free_bytes(g.uuid) for g in world.server.gpus) == free_before + rec.measured_bytes


async def test_a_crashed_split_worker_is_seen_and_its_memory_checked_on_every_gpu(world: World, model_path: str) -> None:
    rec = await world.scheduler.load(req(model_path, ("0", "1")))
    world.launcher.started[-1].kill()
    await eventually(lambda: any(e["event"] == "memory_check" for e in world.scheduler.timeline.events), 60)
    assert rec.state == "crashed"
    check = [e for e in world.scheduler.timeline.events if e["event"] == "memory_check"][-1]
    assert check["returned"] and holders(world) == {0: [], 1: []}


async def test_a_split_model_moves_onto_one_gpu(world: World, model_path: str) -> None:
    rec = await world.scheduler.load(req(model_path, ("0", "1")))
    old = rec.pid
    await world.scheduler.move("glm", "1")
    assert rec.state == "ready" and not rec.placement.split and rec.placement.gpu_index == 1
    assert holders(world) == {0: [], 1: [rec.pid]} and rec.pid != old
    moved = [e for e in world.scheduler.timeline.events if e["event"] == "moved"][-1]
    assert moved["source"] == "0+1" and moved["target"] == 1


async def test_a_split_that_does_not_fit_is_refused_before_any_worker_starts(world: World, model_path: str) -> None:
    g1 = world.server.gpus[1]
    world.server.allocate(g1.uuid, 7, g1.total_bytes - int(0.5 * GiB), "bob", "hog")
    rec = await world.scheduler.load(req(model_path, ("0", "1")))
    assert rec.state == "failed" and world.launcher.started == []
    assert (rec.error or "").startswith("refused at preflight: GPU 1 has room for no layer")


async def test_blip2_over_two_gpus_is_refused_with_a_clear_line(world: World, tiny_blip2_path: Path) -> None:
    rec = await world.scheduler.load(req(str(tiny_blip2_path), ("0", "1"), kind="blip2"))
    assert rec.state == "failed" and world.launcher.started == []
    assert rec.error == "refused at preflight: blip2 models run on one GPU; name one GPU"
