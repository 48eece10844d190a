"""Scheduler decisions and ordering, with fake workers on a simulated server."""

from __future__ import annotations

import asyncio
import math

import pytest

from gputui.core.requests import ModelRequest
from gputui.core.units import GiB, MiB
from gputui.scheduler.scheduler import NotReady
from tests.fakes.fake_worker import Behaviour
from tests.scheduler.conftest import World
from tests.waiting import eventually


def req(name: str, path: str, gpus: tuple[str, ...] = ("auto",), **kw) -> ModelRequest:  # type: ignore[no-untyped-def]
    return ModelRequest(name=name, kind="chatglm3", path=path, gpus=gpus, max_context=256, **kw)


async def test_a_model_that_fits_goes_through_every_stage_to_ready(world: World, model_path: str) -> None:
    stages: list[str] = []
    world.scheduler.subscribe(lambda r: stages.append(r.stage))
    rec = await world.scheduler.load(req("glm", model_path))
    assert rec.state == "ready", rec.error
    assert stages[0] == "queued"
    order = ["preflight", "starting_worker", "warming_cublas", "loading_weights", "warm_up", "ready"]
    seen = [s for s in stages if s in order]
    assert sorted(set(seen), key=seen.index) == order
    assert rec.measured_bytes == rec.estimate.total_bytes  # booked on the simulated GPU
    assert rec.pid in world.scheduler.worker_pids()


async def test_auto_picks_the_gpu_with_the_most_free_memory(world: World, model_path: str) -> None:
    world.scheduler.policy = type(world.scheduler.policy)(margin_bytes=0, allow_shared=True)
    world.server.allocate(world.server.gpus[0].uuid, 1, 2 * GiB, "bob", "x")
    rec = await world.scheduler.load(req("glm", model_path))
    assert rec.placement.gpu_index == 1


async def test_auto_avoids_gpus_where_other_users_run(world: World, model_path: str) -> None:
    world.server.allocate(world.server.gpus[1].uuid, 1, 10 * MiB, "bob", "tiny job")
    world.server.allocate(world.server.gpus[0].uuid, 2, 1 * GiB, "carol", "not ours either")
    rec = await world.scheduler.load(req("glm", model_path))
    assert rec.state == "failed"
    assert "another user's process" in (rec.error or "")


async def test_a_model_that_does_not_fit_is_refused_before_any_worker_starts(world: World, model_path: str) -> None:
    g = world.server.gpus[0]
    world.server.allocate(g.uuid, 7, g.total_bytes - 300 * MiB, "bob", "hog")
    rec = await world.scheduler.load(req("glm", model_path, gpus=("0",)))
    assert rec.state == "failed"
    msg = rec.error or ""
    assert "GPU 0" in msg and "needs" in msg and "free" in msg and "GPU 1" in msg and "would fit" in msg
    assert "\n" not in msg
    assert world.launcher.started == []  # nothing was started, nothing allocated


async def test_a_gpu_named_by_uuid_or_bus_id_is_used(world: World, model_path: str) -> None:
    g1 = world.server.gpus[1]
    rec = await world.scheduler.load(req("a", model_path, gpus=(g1.uuid,)))
    assert rec.placement.gpu_index == 1
    rec = await world.scheduler.load(req("b", model_path, gpus=(g1.pci_bus_id.lower()[9:],)))
    assert rec.placement.gpu_index == 1


async def test_an_unknown_gpu_names_the_gpus_that_exist(world: World, model_path: str) -> None:
    rec = await world.scheduler.load(req("glm", model_path, gpus=("GPU-nope",)))
    assert rec.state == "failed" and world.server.gpus[0].uuid in (rec.error or "")


async def test_commands_run_strictly_in_arrival_order(world: World, model_path: str) -> None:
    world.launcher.behaviours = [Behaviour(load_delay=0.05), Behaviour(load_delay=0.0)]
    s = world.scheduler
    futs = [s.submit_load(req("slow", model_path)), s.submit_load(req("fast", model_path)),
            s.submit_unload("slow")]
    await asyncio.gather(*futs)
    started = [(e["command"], e["model"]) for e in s.timeline.events if e["event"] == "started"]
    assert started == [("load", "slow"), ("load", "fast"), ("unload", "slow")]
    assert s.models["slow"].state == "unloaded" and s.models["fast"].state == "ready"


async def test_chat_to_a_ready_model_does_not_wait_behind_a_load(world: World, model_path: str) -> None:
    s = world.scheduler
    await s.load(req("glm", model_path))
    world.launcher.behaviours = [Behaviour(stall_in_stage="loading_weights")]  # a load that never ends
    slow = s.submit_load(req("other", model_path))
    await eventually(lambda: s.models["other"].stage == "loading_weights", 60)
    text = "".join([e.get("text", "") async for e in s.chat("glm", {"messages": []})])
    assert text.strip() == "hello there" and not slow.done()  # answered while the load still runs
    await s.unload("other")
    await slow


async def test_a_worker_dying_mid_load_fails_that_model_and_the_queue_goes_on(world: World, model_path: str) -> None:
    world.launcher.behaviours = [Behaviour(die_in_stage="loading_weights", hold_bytes=500 * MiB), Behaviour()]
    s = world.scheduler
    a, b = s.submit_load(req("dies", model_path)), s.submit_load(req("fine", model_path))
    ra, rb = await a, await b
    assert ra.state == "failed" and "exited with code -9" in (ra.error or "")
    assert rb.state == "ready"
    # the dead worker's memory is back: only the healthy model holds memory
    holders = {p.pid for g in world.server.snapshot().gpus for p in g.processes}
    assert holders == {rb.pid}


async def test_an_oom_during_load_reports_the_stage_and_frees_the_worker(world: World, model_path: str) -> None:
    world.launcher.behaviours = [Behaviour(fatal_in_stage="loading_weights")]
    rec = await world.scheduler.load(req("glm", model_path))
    assert rec.state == "failed"
    assert "loading_weights" in (rec.error or "") and "out of memory" in (rec.error or "")
    assert world.launcher.started[0].returncode is not None


async def test_contention_between_preflight_and_load_names_the_other_process(world: World, model_path: str) -> None:
    """Another process fills the GPU after our preflight: the error names it."""
    g = world.server.gpus[0]
    world.launcher.behaviours = [Behaviour(load_delay=0.2, hold_bytes=1 * GiB)]
    fut = world.scheduler.submit_load(req("glm", model_path, gpus=("0",)))
    await asyncio.sleep(0.1)
    world.server.allocate(g.uuid, 6666, g.total_bytes - 900 * MiB, "mallory", "grab")
    rec = await fut
    assert rec.state == "failed"
    assert "contention" in (rec.error or "") and "pid 6666 (mallory)" in (rec.error or "")


async def test_a_crash_after_ready_marks_the_model_crashed_and_others_carry_on(world: World, model_path: str) -> None:
    world.launcher.behaviours = [Behaviour(die_after_tokens=2, reply="a b c d e"), Behaviour()]
    s = world.scheduler
    await s.load(req("a", model_path))
    await s.load(req("b", model_path))
    events = [e async for e in s.chat("a", {"messages": []})]
    assert events[-1]["event"] == "exit"
    assert "".join(e.get("text", "") for e in events) == "a b "
    await eventually(lambda: s.models["a"].state == "crashed", 60)
    with pytest.raises(NotReady, match="crashed"):
        s.ready_record("a")
    assert "".join([e.get("text", "") async for e in s.chat("b", {"messages": []})]).strip() == "hello there"


async def test_unload_ends_the_worker_and_waits_for_the_memory(world: World, model_path: str) -> None:
    s = world.scheduler
    rec = await s.load(req("glm", model_path))
    pid = rec.pid
    result = await s.unload("glm")
    assert result["returned"] is True
    assert result["returned_bytes"] == rec.measured_bytes
    assert all(p.pid != pid for g in world.server.snapshot().gpus for p in g.processes)
    assert "shutdown" in world.launcher.started[0].b.log


async def test_move_brings_the_target_up_first_then_frees_the_source(world: World, model_path: str) -> None:
    s = world.scheduler
    rec = await s.load(req("glm", model_path, gpus=("0",)))
    old_pid = rec.pid
    await s.move("glm", "1")
    assert rec.placement.gpu_index == 1 and rec.state == "ready" and rec.pid != old_pid
    gpus = world.server.snapshot().gpus
    assert not gpus[0].processes and [p.pid for p in gpus[1].processes] == [rec.pid]


async def test_a_failed_move_leaves_the_source_serving(world: World, model_path: str) -> None:
    s = world.scheduler
    rec = await s.load(req("glm", model_path, gpus=("0",)))
    old_pid = rec.pid
    world.launcher.behaviours = [Behaviour(fatal_in_stage="warming_cublas",
                                           fatal_message="CUBLAS_STATUS_NOT_INITIALIZED")]
    with pytest.raises(Exception, match="CUBLAS_STATUS_NOT_INITIALIZED"):
        await s.move("glm", "1")
    assert rec.state == "ready" and rec.pid == old_pid and rec.placement.gpu_index == 0
    assert "".join([e.get("text", "") async for e in s.chat("glm", {"messages": []})]).strip() == "hello there"


async def test_chat_to_a_failed_model_says_why(world: World, model_path: str) -> None:
    world.launcher.behaviours = [Behaviour(fatal_in_stage="warm_up", fatal_message="boom")]
    await world.scheduler.load(req("glm", model_path))
    with pytest.raises(NotReady, match="failed to load.*boom"):
        world.scheduler.ready_record("glm")


async def test_cancel_stops_a_reply_mid_way(world: World, model_path: str) -> None:
    world.launcher.behaviours = [Behaviour(reply=" ".join(["w"] * 50), token_delay=0.01)]
    s = world.scheduler
    await s.load(req("glm", model_path))
    rids: list[str] = []
    events = []
    async for e in s.chat("glm", {"messages": []}, on_request_id=rids.append):
        events.append(e)
        if len(events) == 3:
            await s.cancel("glm", rids[0])
    assert events[-1]["event"] == "done" and events[-1]["finish"] == "cancelled"
    assert len(events) < 10


async def test_two_tiny_models_share_one_4gib_gpu_and_their_memory_is_booked(model_path: str) -> None:
    w = World(gpus=1, gib=4)
    try:
        a = await w.scheduler.load(req("a", model_path))
        b = await w.scheduler.load(req("b", model_path))
        assert (a.state, b.state) == ("ready", "ready"), (a.error, b.error)
        assert a.placement is not None and b.placement is not None
        assert a.placement.gpu_index == b.placement.gpu_index == 0 and a.pid != b.pid
        snap = w.server.snapshot()
        ours = {p.pid for p in snap.gpus[0].processes}
        assert {a.pid, b.pid} <= ours  # each worker holds its own memory on the one GPU
        w.check_invariants()
    finally:
        await w.scheduler.close()


async def test_a_device_side_assert_restarts_the_model_in_a_fresh_worker(world: World, model_path: str) -> None:
    """Fault 16: the poisoned worker ends itself; the model comes back in a new process."""
    s = world.scheduler
    world.launcher.behaviours = [Behaviour(device_assert_on_generate=True), Behaviour(reply="back again")]
    rec = await s.load(req("glm", model_path))
    first_pid = rec.pid
    events = [e async for e in s.chat("glm", {"messages": []})]
    assert events[-1]["event"] == "error" and "device-side assert" in events[-1]["message"]
    await eventually(lambda: s.models["glm"].state == "ready" and s.models["glm"].pid not in (None, first_pid), 60)
    again = s.models["glm"]
    assert again.state == "ready" and again.pid != first_pid and again.restarts == 1
    assert "".join([e.get("text", "") async for e in s.chat("glm", {"messages": []})]).strip() == "back again"
    assert [e["event"] for e in s.timeline.events if e["model"] == "glm"].count("restarting") == 1


async def test_a_model_that_keeps_asserting_is_left_crashed(world: World, model_path: str) -> None:
    s = world.scheduler
    world.launcher.behaviours = [Behaviour(device_assert_on_generate=True) for _ in range(10)]
    await s.load(req("glm", model_path))
    for attempt in range(1, 5):  # each assert crashes the worker; three restarts are allowed
        [e async for e in s.chat("glm", {"messages": []})]
        await eventually(lambda a=attempt: s.models["glm"].restarts == a and s.models["glm"].state in ("ready", "crashed")
                         and not s._queue.qsize(), 60)
    assert s.models["glm"].state == "crashed" and s.models["glm"].restarts == 4
    await eventually(lambda: not s.crashes_in_hand, 60)
    assert s.models["glm"].state == "crashed"  # and left so: no fifth start


async def test_closing_unloads_and_is_never_logged_as_a_crash(world: World, model_path: str) -> None:
    await world.scheduler.load(req("glm", model_path))
    await world.scheduler.close()
    await eventually(lambda: not world.scheduler.crashes_in_hand, 60)  # the crash watcher has looked
    events = [e["event"] for e in world.scheduler.timeline.events if e["model"] == "glm"]
    assert "crashed" not in events and events[-1] == "unloaded"
    assert world.scheduler.models["glm"].state == "unloaded"


async def test_keep_alive_unloads_an_idle_model_and_says_why(world: World, model_path: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from gputui.scheduler import scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "KEEP_ALIVE_TICK_S", 0.05)
    s = world.scheduler
    world.launcher.behaviours = [Behaviour(reply="a b c", token_delay=0.2), Behaviour()]
    kept = await s.load(req("brief", model_path, keep_alive_s=0.5))
    forever = await s.load(req("forever", model_path))
    # a reply longer than the keep-alive: never unloaded mid-reply
    text = "".join([e.get("text", "") async for e in s.chat("brief", {"messages": []})])
    assert text.strip() == "a b c" and kept.state == "ready"
    await eventually(lambda: kept.state == "unloaded", 60, "the idle model was not unloaded")
    idle = [e for e in s.timeline.events if e["event"] == "idle_unload"]
    assert [e["model"] for e in idle] == ["brief"] and idle[0]["keep_alive_s"] == 0.5
    assert forever.state == "ready"  # no keep_alive: kept for ever
    assert kept.view().keep_alive_left() is None


async def test_the_settings_keep_alive_applies_unless_a_model_says_forever(
        world: World, model_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from gputui.scheduler import scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "KEEP_ALIVE_TICK_S", 0.05)
    s = world.scheduler
    s.default_keep_alive_s = 0.5  # settings.toml: keep_alive = "0.5s"
    unsaid = await s.load(req("unsaid", model_path))
    forever = await s.load(req("forever", model_path, keep_alive_s=math.inf))
    assert unsaid.view().keep_alive_s == 0.5 and forever.view().keep_alive_s is None
    await eventually(lambda: unsaid.state == "unloaded", 60, "the default keep-alive did not unload it")
    assert forever.state == "ready"
    doc = forever.view().request.to_json()
    assert doc["keep_alive_s"] == "forever"  # JSON has no infinity
    from gputui.core.requests import ModelRequest

    assert ModelRequest.from_json(doc).keep_alive_s == math.inf


def test_keep_alive_is_read_from_profiles_and_durations() -> None:
    from gputui.core.profiles import parse_profile
    from gputui.core.requests import parse_duration

    assert [parse_duration(x) for x in ("30s", "10m", "2h", "1d", 90, "forever")] == [30, 600, 7200, 86400, 90, math.inf]
    assert parse_duration(0) == 0  # unload after the reply (Ollama's 0)
    for bad in ("soon", "-5m", "nan", "1e-300s", 0.5):
        with pytest.raises(ValueError):
            parse_duration(bad)
    p = parse_profile('name = "k"\n[[models]]\nname = "a"\nkind = "chatglm3"\npath = "demo:chatglm3"\nkeep_alive = "10m"\n',
                      check_paths=False)
    assert p.models[0].keep_alive_s == 600
