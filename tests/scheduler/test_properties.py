"""Property test: random sequences of load / unload / move / chat / kill / other users' memory
over two small simulated GPUs, with fake workers that sometimes die or run out of memory.

After every command: the four invariants hold (tests/invariants.py), every model is in a
defined resting state, and every command ended in a defined way (a result, or one of the
errors the scheduler promises). After the last one, closing leaves no worker and no memory.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gputui.core.placement import PlacementPolicy, PlacementRefused
from gputui.core.requests import ModelRequest
from gputui.core.units import GiB, MiB
from gputui.hardware.simulated import SimulatedServer, make_gpus
from gputui.scheduler import Scheduler
from gputui.scheduler.scheduler import NotReady
from gputui.scheduler.worker_handle import WorkerFailed
from tests.fakes.fake_worker import Behaviour, FakeLauncher
from tests.invariants import check_invariants

NAMES = ("a", "b", "c")
BEHAVIOURS = {
    "ok": {},
    "dies_loading": {"die_in_stage": "loading_weights"},
    "oom_warming": {"fatal_in_stage": "warming_cublas"},
    "dies_replying": {"die_after_tokens": 1},
    "grabs_too_much": {"hold_bytes": 3 * GiB},  # more than the GPU has: OOM while loading
}
RESTING = {"ready", "failed", "crashed", "unloaded"}

behaviour = st.sampled_from(["ok"] * 4 + sorted(BEHAVIOURS))  # mostly healthy workers
op = st.one_of(
    st.tuples(st.just("load"), st.sampled_from(NAMES), st.sampled_from(("auto", "0", "1")), behaviour),
    st.tuples(st.just("unload"), st.sampled_from(NAMES)),
    st.tuples(st.just("move"), st.sampled_from(NAMES), st.sampled_from(("0", "1")), behaviour),
    st.tuples(st.just("chat"), st.sampled_from(NAMES)),
    st.tuples(st.just("kill"), st.sampled_from(NAMES)),
    st.tuples(st.just("other_user"), st.sampled_from((0, 1)), st.sampled_from((0, 300, 900, 1500))),
)


async def wait_for(cond, timeout: float = 60.0) -> None:  # noqa: ANN001
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting for the scheduler"
        await asyncio.sleep(0.005)


async def run_sequence(ops: list[tuple], model_path: str) -> None:
    server = SimulatedServer(make_gpus(2, 2 * GiB))
    launcher = FakeLauncher(server)
    s = Scheduler(server, launcher, policy=PlacementPolicy(margin_bytes=64 * MiB), memory_return_timeout=1.0)
    try:
        for o in ops:
            await apply(s, server, launcher, o, model_path)
            check_invariants(s, settled=True)
            assert {r.state for r in s.models.values()} <= RESTING, [(r.name, r.state) for r in s.models.values()]
    finally:
        await s.close()
    check_invariants(s, settled=True)
    assert launcher.live_pids() == set()
    ours = launcher.started_pids()
    assert not [p for g in server.snapshot().gpus for p in g.processes if p.pid in ours]


async def apply(s: Scheduler, server: SimulatedServer, launcher: FakeLauncher, o: tuple, path: str) -> None:
    kind, name = o[0], o[1]
    if kind == "load":
        launcher.behaviours = [Behaviour(**BEHAVIOURS[o[3]])]
        was = s.models.get(name)
        was_ready = was is not None and was.state == "ready"
        try:
            rec = await s.load(ModelRequest(name, "chatglm3", path, gpus=(o[2],), max_context=256))
        except PlacementRefused as e:  # already loaded elsewhere: unload or move first
            assert was_ready and "already loaded" in str(e)
            return
        assert rec.state in ("ready", "failed")
        event(f"load: {rec.state}")
        if rec.state == "failed":
            assert rec.error and "\n" not in rec.error.strip()
            assert rec.pid is None
    elif kind == "unload":
        try:
            await s.unload(name)
        except KeyError:
            assert name not in s.models
            return
        assert s.models[name].state == "unloaded" and s.models[name].pid is None
    elif kind == "move":
        launcher.behaviours = [Behaviour(**BEHAVIOURS[o[3]])]
        before = s.models.get(name)
        was_ready = before is not None and before.state == "ready"
        try:
            rec = await s.move(name, o[2])
        except NotReady:
            assert not was_ready
            return
        except (PlacementRefused, WorkerFailed):
            assert was_ready and s.models[name].state == "ready"  # the source keeps serving
            event("move: refused or failed, source kept")
            return
        event("move: done")
        assert rec.state == "ready" and rec.placement is not None and rec.placement.gpu_index == int(o[2])
    elif kind == "chat":
        rec = s.models.get(name)
        try:
            events = [e async for e in s.chat(name, {"messages": [{"role": "user", "content": "hi"}]})]
        except NotReady:
            assert rec is None or rec.state != "ready"
            return
        assert events and events[-1]["event"] in ("done", "error", "exit")
        event(f"chat: {events[-1]['event']}")
        if events[-1]["event"] != "done":  # the worker died mid-reply: the model reads crashed
            await wait_for(lambda: s.models[name].state == "crashed")
    elif kind == "kill":
        rec = s.models.get(name)
        if rec is not None and rec.handle is not None and rec.handle.alive:
            rec.handle.kill()
            await wait_for(lambda: rec.state == "crashed")
            event("kill: crashed")
    elif kind == "other_user":
        gpu = server.gpus[o[1]]
        server.release(90_000 + o[1])
        if o[2]:
            try:
                server.allocate(gpu.uuid, 90_000 + o[1], o[2] * MiB, "bob", "someone else's job")
            except MemoryError:
                pass


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(op, min_size=1, max_size=12))
def test_random_command_sequences_keep_every_invariant(tiny_chatglm3_path: Path, ops: list[tuple]) -> None:
    asyncio.run(run_sequence(ops, str(tiny_chatglm3_path)))


async def run_concurrently(ops: list[tuple], model_path: str) -> None:
    """The same commands, all submitted at once (as impatient users and scripts do): the queue
    must serialize them, each must end in a defined way, and the invariants hold once settled."""
    server = SimulatedServer(make_gpus(2, 2 * GiB))
    launcher = FakeLauncher(server, [Behaviour(**BEHAVIOURS[o[3]]) for o in ops if o[0] in ("load", "move")])
    s = Scheduler(server, launcher, policy=PlacementPolicy(margin_bytes=64 * MiB), memory_return_timeout=1.0)

    async def chat(name: str) -> list[dict]:
        return [e async for e in s.chat(name, {"messages": [{"role": "user", "content": "hi"}]})]

    try:
        pending = []
        for o in ops:
            kind, name = o[0], o[1]
            if kind == "load":
                pending.append(s.submit_load(ModelRequest(name, "chatglm3", model_path, gpus=(o[2],), max_context=256)))
            elif kind == "unload":
                pending.append(s.submit_unload(name))
            elif kind == "move":
                pending.append(s.submit_move(name, o[2]))
            elif kind == "chat":
                pending.append(asyncio.ensure_future(chat(name)))
            elif kind == "kill":
                rec = s.models.get(name)
                if rec is not None and rec.handle is not None and rec.handle.alive:
                    rec.handle.kill()
            await asyncio.sleep(0)
        results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 30)
        for r in results:
            assert not isinstance(r, BaseException) or isinstance(r, (NotReady, PlacementRefused, WorkerFailed, KeyError)), r
        await wait_for(lambda: all(r.state in RESTING for r in s.models.values()))
        await wait_for(lambda: not s.crashes_in_hand)  # crash watchers finish their memory checks
        check_invariants(s, settled=True)
    finally:
        await s.close()
    check_invariants(s, settled=True)
    assert launcher.live_pids() == set()
    started = [e["command"] for e in s.timeline.events if e["event"] == "started"]
    assert started == [o[0] for o in ops if o[0] in ("load", "unload", "move")]


@pytest.mark.slow
@settings(max_examples=500, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(op.filter(lambda o: o[0] != "other_user"), min_size=1, max_size=10))
def test_commands_submitted_all_at_once_are_serialized_and_end_defined(tiny_chatglm3_path: Path, ops: list[tuple]) -> None:
    asyncio.run(run_concurrently(ops, str(tiny_chatglm3_path)))
