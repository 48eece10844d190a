"""Real worker processes on the CPU with tiny real-format checkpoints.

The worker is the same code that runs on a GPU (spawned interpreter, fixed load order,
streaming); only the device differs. Memory is booked on the simulated GPUs.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from gputui.core.requests import ModelRequest
from gputui.hardware.simulated import SimulatedServer, make_gpus
from gputui.scheduler import Scheduler
from gputui.scheduler.simulated_launcher import SimulatedLauncher
from tests.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
async def real():  # type: ignore[no-untyped-def]
    server = SimulatedServer(make_gpus(2))
    # each worker waits 5 s in its warm-up stage, so a kill aimed mid-load lands there on any
    # machine speed (the stage is reported before the wait)
    launcher = SimulatedLauncher(server, spare=False, threads=1, extra_env={"GPUTUI_FAULT_PAUSE": "warming_cublas:5"})
    sched = Scheduler(server, launcher, memory_return_timeout=5.0)
    yield server, launcher, sched
    await sched.close()


async def test_load_chat_and_unload_a_tiny_chatglm3(real, tiny_chatglm3_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _launcher, sched = real
    rec = await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), max_context=256))
    assert rec.state == "ready", rec.error
    assert set(rec.ready_report["timings"]) == {"warming_cublas", "loading_weights", "warm_up"}
    pid = rec.pid
    assert any(p.pid == pid for g in server.snapshot().gpus for p in g.processes)
    events = [e async for e in sched.chat("glm", {"messages": [{"role": "user", "content": "hello"}],
                                                  "params": {"max_new_tokens": 8, "temperature": 0}})]
    assert events[-1]["event"] == "done" and events[-1]["new_tokens"] >= 1
    assert all(e["event"] in ("token", "done") for e in events)
    result = await sched.unload("glm")
    assert result["returned"] and result["returncode"] == 0
    await asyncio.sleep(0.1)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_greedy_replies_are_deterministic_across_workers(real, tiny_chatglm3_path: Path) -> None:  # type: ignore[no-untyped-def]
    _server, _launcher, sched = real
    ask = {"messages": [{"role": "user", "content": "hi"}], "params": {"max_new_tokens": 6, "temperature": 0}}
    await sched.load(ModelRequest("a", "chatglm3", str(tiny_chatglm3_path), max_context=256))
    await sched.load(ModelRequest("b", "chatglm3", str(tiny_chatglm3_path), max_context=256))
    ta = "".join([e.get("text", "") async for e in sched.chat("a", ask)])
    tb = "".join([e.get("text", "") async for e in sched.chat("b", ask)])
    assert ta == tb and sched.models["a"].pid != sched.models["b"].pid


async def test_a_split_model_loads_in_a_real_worker_and_answers_as_the_whole_one(real, tiny_chatglm3_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The worker gets two layer ranges (both on the one CPU device here): it loads them,
    says so in its ready report, and its greedy reply is the unsplit model's."""
    server, _launcher, sched = real
    ask = {"messages": [{"role": "user", "content": "hi"}], "params": {"max_new_tokens": 6, "temperature": 0}}
    whole = await sched.load(ModelRequest("whole", "chatglm3", str(tiny_chatglm3_path), gpus=("0",), max_context=256))
    split = await sched.load(ModelRequest("split", "chatglm3", str(tiny_chatglm3_path), gpus=("0", "1"),
                                          max_context=256))
    assert whole.state == "ready" and split.state == "ready", split.error
    runtime = split.ready_report["runtime"]
    assert runtime["layer_split"] == [[0, 1], [1, 2]]
    assert runtime["decode_note"].startswith("split over 2 GPUs (layers 0-0 | 1-1)")
    assert whole.ready_report["runtime"]["layer_split"] is None
    tw = "".join([e.get("text", "") async for e in sched.chat("whole", ask)])
    ts = "".join([e.get("text", "") async for e in sched.chat("split", ask)])
    assert ts == tw and ts
    assert {g.index for g in server.snapshot().gpus for p in g.processes if p.pid == split.pid} == {0, 1}


async def test_kill_9_mid_load_fails_the_model_and_frees_everything(real, tiny_chatglm3_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _launcher, sched = real
    fut = sched.submit_load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), max_context=256))
    rec = sched.models["glm"]
    await eventually(lambda: rec.stage == "warming_cublas", 300, "the worker never reached its warm-up")
    pid = sched.launcher._handles and next(iter(sched.launcher._handles)).pid  # type: ignore[attr-defined]
    os.kill(pid, signal.SIGKILL)
    rec = await fut
    assert rec.state == "failed" and "-9" in (rec.error or "")
    assert not any(p.pid == pid for g in server.snapshot().gpus for p in g.processes)


async def test_blip2_answers_about_an_image_and_bad_images_are_clear_errors(real, tiny_blip2_path: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    _server, _launcher, sched = real
    img = tmp_path / "red.png"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(img)
    (tmp_path / "notimage.png").write_text("hello")
    rec = await sched.load(ModelRequest("blip", "blip2", str(tiny_blip2_path)))
    assert rec.state == "ready", rec.error
    ev = [e async for e in sched.chat("blip", {"image": str(img), "question": "what colour?",
                                               "params": {"max_new_tokens": 5}})]
    assert ev[-1]["event"] == "done" and ev[-1]["new_tokens"] >= 1
    for bad, words in ((tmp_path / "missing.png", "no such file"), (tmp_path / "notimage.png", "not an image")):
        ev = [e async for e in sched.chat("blip", {"image": str(bad), "params": {}})]
        assert ev[-1]["event"] == "error" and words in ev[-1]["message"]
    assert sched.models["blip"].state == "ready"  # the worker survived the bad input


async def test_a_blip2_folder_loaded_as_chatglm3_is_refused_by_name(real, tiny_blip2_path: Path) -> None:  # type: ignore[no-untyped-def]
    _server, launcher, sched = real
    rec = await sched.load(ModelRequest("x", "chatglm3", str(tiny_blip2_path)))
    assert rec.state == "failed" and "a blip2 checkpoint, not chatglm3" in (rec.error or "")
    assert not launcher._handles  # type: ignore[attr-defined]


async def test_a_long_conversation_is_cut_from_the_oldest_turn_with_a_notice(real, tiny_chatglm3_path: Path) -> None:  # type: ignore[no-untyped-def]
    _server, _launcher, sched = real
    await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), max_context=128))
    turns = [{"role": "system", "content": "be brief"}]
    for i in range(12):
        turns += [{"role": "user", "content": f"question number {i} about the quick brown fox"},
                  {"role": "assistant", "content": f"answer {i}"}]
    turns.append({"role": "user", "content": "and now?"})
    events = [e async for e in sched.chat("glm", {"messages": turns, "params": {"max_new_tokens": 8, "temperature": 0}})]
    notices = [e["notice"] for e in events if e.get("notice")]
    assert notices and "left out the" in notices[0] and "oldest message" in notices[0]
    assert events[-1]["event"] == "done" and events[-1]["dropped_messages"] > 0
    assert events[-1]["prompt_tokens"] <= 128 - 8
    # a last message that alone is over the context is refused with a reason, the worker lives on
    huge = [{"role": "user", "content": "fox " * 400}]
    events = [e async for e in sched.chat("glm", {"messages": huge, "params": {"max_new_tokens": 8}})]
    assert events[-1]["event"] == "error" and "the last message alone is" in events[-1]["message"]
    assert sched.models["glm"].state == "ready"


async def test_a_worker_says_hello_before_its_model_imports_and_says_when_they_are_done() -> None:
    """Hello comes after torch; the model modules import on a thread (a load meanwhile warms
    cuBLAS), and "imported" says when the worker is really warm."""
    from gputui.scheduler.launcher import LocalLauncher

    launcher = LocalLauncher(spare=False, device="cpu", threads=1)
    try:
        handle = await launcher.start_worker("chatglm3")
        assert handle.hello is not None
        await eventually(handle.imported.is_set, timeout=120, what="the worker never said its imports were done")
    finally:
        await launcher.close()


async def test_a_model_module_that_fails_to_import_fails_the_load_at_its_weights(
        tiny_chatglm3_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from gputui.core import kinds

    broken = kinds.ModelKind(**{**kinds.KINDS["chatglm3"].__dict__, "runtime": "gputui.models.no_such_module:X"})
    monkeypatch.setitem(kinds.KINDS, "chatglm3", broken)  # the launcher names the module to preload
    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, SimulatedLauncher(server, spare=False, threads=1), memory_return_timeout=5.0)
    try:
        rec = await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), max_context=256))
        assert rec.state == "failed"
        assert "loading_weights" in (rec.error or "") and "no_such_module" in (rec.error or "")
    finally:
        await sched.close()


async def test_a_batching_worker_answers_requests_together(tiny_chatglm3_path: Path) -> None:
    """max_batch = 3: a real worker answers three chats at once (a reply's peak batch says so),
    each with the text it gets alone; the view counts the requests under way, and the
    preflight booked three contexts of KV cache. (Each token held 20 ms: the three requests,
    sent together, are all under way long before the first reply could end.)"""
    server = SimulatedServer(make_gpus(1))
    launcher = SimulatedLauncher(server, spare=False, threads=1, extra_env={"GPUTUI_FAULT_PAUSE": "token:0.02"})
    sched = Scheduler(server, launcher, memory_return_timeout=5.0)
    try:
        await _batching_worker(sched, tiny_chatglm3_path)
    finally:
        await sched.close()


async def _batching_worker(sched: Scheduler, tiny_chatglm3_path: Path) -> None:
    one = await sched.load(ModelRequest("one", "chatglm3", str(tiny_chatglm3_path), max_context=256))
    rec = await sched.load(ModelRequest("many", "chatglm3", str(tiny_chatglm3_path), max_context=256, max_batch=3))
    assert rec.state == "ready", rec.error
    assert rec.view().slots == 3 and rec.ready_report["runtime"]["max_batch"] == 3
    assert rec.predicted_bytes > one.predicted_bytes  # two more slots of KV cache
    asks = [{"messages": [{"role": "user", "content": f"question {i}"}],
             "params": {"max_new_tokens": 24, "temperature": 0, "ignore_stop": True}} for i in range(3)]
    seen_in_use: list[int] = []

    async def ask(req: dict) -> tuple[str, dict]:
        text, done = "", {}
        async for e in sched.chat("many", req):
            seen_in_use.append(sched.models["many"].view().in_use)
            text += e.get("text", "")
            done = e if e["event"] == "done" else done
        return text, done

    together = await asyncio.gather(*(ask(r) for r in asks))
    assert max(d["batch_peak"] for _, d in together) >= 2
    assert max(seen_in_use) >= 2 and sched.models["many"].view().in_use == 0
    for (text, _), req in zip(together, asks, strict=True):
        alone = "".join([e.get("text", "") async for e in sched.chat("one", req)])
        assert text == alone


async def test_a_causal_lm_loads_in_a_real_worker_and_answers(real, tiny_causal_lm_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Kind causal-lm through the scheduler: preflight, a worker in the fixed order, a streamed
    greedy reply, memory booked as predicted, unload."""
    _server, _launcher, sched = real
    rec = await sched.load(ModelRequest("lm", "causal-lm", str(tiny_causal_lm_path), max_context=128))
    assert rec.state == "ready", rec.error
    assert rec.ready_report["runtime"]["architecture"] in ("llama", "qwen2", "mistral")
    ask = {"messages": [{"role": "user", "content": "hello"}], "params": {"max_new_tokens": 6, "temperature": 0,
                                                                        "ignore_stop": True}}
    events = [e async for e in sched.chat("lm", ask)]
    assert events[-1]["event"] == "done" and events[-1]["new_tokens"] == 6, events[-1]
    assert (await sched.unload("lm"))["returned"]
