"""Every wait has a bound or a cancel; an unload always works (hostile-server issue, item 8).

A SIGSTOPped worker used to hold every lifecycle command for up to 600 s per stage (an unload of
another model waited 88 s); a worker that never said hello was never killed; a history over the
worker's message limit was dropped and the chat waited for ever.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from gputui.chat.session import ChatSession
from gputui.core.requests import ModelRequest
from gputui.scheduler import worker_handle
from gputui.scheduler.client import LocalClient
from tests.fakes.fake_worker import Behaviour
from tests.scheduler.conftest import World
from tests.waiting import eventually


def req(name: str, path: str, **kw) -> ModelRequest:  # type: ignore[no-untyped-def]
    return ModelRequest(name=name, kind="chatglm3", path=path, max_context=256, **kw)


async def test_a_worker_that_goes_quiet_while_loading_is_ended_and_the_queue_goes_on(
        world: World, model_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_handle, "SILENCE_LIMIT_S", 0.5)
    ready = await world.scheduler.load(req("other", model_path))
    world.launcher.behaviours.append(Behaviour(stall_in_stage="loading_weights"))
    stuck = world.scheduler.submit_load(req("stuck", model_path))
    unload_other = world.scheduler.submit_unload("other")  # queued behind the stuck load
    rec = await asyncio.wait_for(stuck, 30)
    assert rec.state == "failed" and "stopped answering while loading" in (rec.error or "")
    assert (await asyncio.wait_for(unload_other, 30))["returned"] and ready.state == "unloaded"
    assert all(p.returncode is not None for p in world.launcher.started if p.b.stall_in_stage)


async def test_an_unload_cancels_a_load_in_progress_at_once(world: World, model_path: str) -> None:
    world.launcher.behaviours.append(Behaviour(stall_in_stage="loading_weights"))
    load = world.scheduler.submit_load(req("glm", model_path))
    await eventually(lambda: world.scheduler.models["glm"].stage == "loading_weights", 10)
    result = await asyncio.wait_for(world.scheduler.unload("glm"), 10)  # not 30 s of silence, not 600
    rec = await load
    assert result["returned"] and rec.state == "unloaded"
    assert world.launcher.started[-1].returncode is not None
    assert [e["event"] for e in world.scheduler.timeline.events if e["model"] == "glm"].count("load_cancelled") == 1


async def test_an_unload_of_a_queued_load_means_it_never_starts(world: World, model_path: str) -> None:
    world.launcher.behaviours.append(Behaviour(load_delay=0.2))
    first = world.scheduler.submit_load(req("first", model_path))
    queued = world.scheduler.submit_load(req("queued", model_path))
    world.scheduler.submit_unload("queued")
    await first
    rec = await queued
    await eventually(lambda: rec.state == "unloaded", 10)
    assert len(world.launcher.started) == 1  # no worker was ever started for "queued"


async def test_a_history_too_big_for_one_message_is_an_error_not_a_wait(world: World, model_path: str) -> None:
    await world.scheduler.load(req("glm", model_path))
    session = ChatSession(LocalClient(world.scheduler), "glm", "chatglm3")
    session.messages = [{"role": "user", "content": "x" * (1 << 20)} for _ in range(40)]  # 40 MiB
    events = [e async for e in session.send("one more")]
    assert [e.event for e in events] == ["error"] and "MiB" in events[0].text


@pytest.mark.slow
async def test_a_worker_that_never_says_hello_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    from gputui.scheduler import launcher as launcher_module
    from gputui.scheduler.launcher import LocalLauncher
    from gputui.scheduler.worker_handle import WorkerFailed

    monkeypatch.setattr(launcher_module, "HELLO_TIMEOUT_S", 0.2)  # it is still importing torch then
    launcher = LocalLauncher(spare=False, device="cpu", threads=1)
    with pytest.raises(WorkerFailed, match="no sign of life"):
        await launcher.start_worker("chatglm3")
    (pid,) = launcher.started_pids()
    await eventually(lambda: not launcher.live_pids(), 10, "the silent worker was left running")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    await launcher.close()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="SIGSTOP semantics")
async def test_a_real_worker_stopped_mid_load_is_ended(tiny_chatglm3_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real CPU worker, held in its warm-up stage (it keeps saying "alive": a slow stage is
    fine) and then SIGSTOPped (silence: it is ended)."""
    from gputui.hardware.simulated import SimulatedServer, make_gpus
    from gputui.scheduler import Scheduler
    from gputui.scheduler.simulated_launcher import SimulatedLauncher
    from gputui.scheduler.timeline import Timeline

    monkeypatch.setattr(worker_handle, "SILENCE_LIMIT_S", 3.0)
    server = SimulatedServer(make_gpus(1))
    launcher = SimulatedLauncher(server, spare=False, threads=1, extra_env={"GPUTUI_FAULT_PAUSE": "warming_cublas:6"})
    sched = Scheduler(server, launcher, timeline=Timeline(), memory_return_timeout=2)
    load = sched.submit_load(req("glm", str(tiny_chatglm3_path)))
    await eventually(lambda: sched.models["glm"].stage == "warming_cublas", 120, "never reached warm-up")
    await asyncio.sleep(4.0)  # quiet for longer than the limit, but saying "alive": not ended
    assert sched.models["glm"].state == "loading"
    (pid,) = launcher.live_pids()
    os.kill(pid, signal.SIGSTOP)
    rec = await asyncio.wait_for(load, 60)
    assert rec.state == "failed" and "stopped answering" in (rec.error or "")
    await eventually(lambda: not launcher.live_pids(), 10, "the stopped worker was left alive")
    await sched.close()
