"""Fault cases on a real GPU (device only), each through gputui's scheduler:

  1  worker SIGKILLed mid-load          -> failed with the exit code, 0 MiB left, queue goes on
  3  OOM mid-load (GPU filled on cue)   -> worker ends, memory back, error names the other pid
  5  <= 40 MiB free at the first matmul -> fails at warming_cublas, never at a chat
 16  device-side assert in a request     -> the worker ends itself, the model restarts in a new one
 19  gputui itself SIGKILLed             -> its worker exits (EOF), NVML shows the memory back
`python -m bench faults`. (The scheduler directly, not the client: these reach inside.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import checkpoints, hog, say
from gputui.core.requests import ModelRequest
from gputui.hardware.nvml import NvmlTelemetry
from gputui.scheduler import Scheduler
from gputui.scheduler.launcher import LocalLauncher


async def wait_stage(s: Scheduler, name: str, stage: str, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while s.models[name].stage != stage:
        assert time.monotonic() - t0 < timeout, f"{name} never reached {stage} (at {s.models[name].stage})"
        await asyncio.sleep(0.01)


def ours_on_gpu(tel: NvmlTelemetry, pid: int) -> int:
    g = tel.snapshot().gpus[0]
    return sum(p.used_bytes or 0 for p in g.processes if p.pid == pid)


async def run(args: argparse.Namespace) -> None:
    root = checkpoints(args.root)
    tel = NvmlTelemetry()
    glm = ModelRequest("chatglm3", "chatglm3", str(root / "chatglm3-6b"), gpus=("0",), max_context=8192)
    free0 = tel.snapshot().gpus[0].free_bytes

    # case 1: SIGKILL mid-load
    s = Scheduler(tel, LocalLauncher(spare=False, extra_env={"GPUTUI_FAULT_PAUSE": "loading_weights:0"}))
    fut = s.submit_load(glm)
    await wait_stage(s, "chatglm3", "loading_weights")
    await asyncio.sleep(0.6)  # part of the weights are on the GPU now
    pid = next(iter(s.launcher._handles)).pid  # type: ignore[attr-defined]
    held = ours_on_gpu(tel, pid)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    rec = await fut
    detect = time.monotonic() - t0
    await asyncio.sleep(0.3)
    say(case=1, what="SIGKILL mid-load", state=rec.state, error=rec.error, held_mib_at_kill=held >> 20,
        detect_s=round(detect, 3), left_mib=ours_on_gpu(tel, pid) >> 20,
        free_back_mib=(tel.snapshot().gpus[0].free_bytes - free0) >> 20)
    follow = await s.load(glm)  # the queue goes on
    say(case=1, what="next load after the kill", state=follow.state)
    await s.unload("chatglm3")
    await s.close()

    # case 3: OOM mid-load: another process fills the GPU while our weights stream in
    s = Scheduler(tel, LocalLauncher(spare=False, extra_env={"GPUTUI_FAULT_PAUSE": "loading_weights:4"}))
    fut = s.submit_load(glm)
    await wait_stage(s, "chatglm3", "loading_weights")
    h, free = hog(2048)
    try:
        rec = await fut
        say(case=3, what="OOM mid-load (hog on cue)", hog_left_free_mib=free, state=rec.state, error=rec.error,
            hog_pid=h.pid)
    finally:
        h.kill()
        h.wait()
    await asyncio.sleep(0.3)
    say(case=3, what="after", free_back_mib=(tel.snapshot().gpus[0].free_bytes - free0) >> 20,
        our_processes=[p.pid for p in tel.snapshot().gpus[0].processes])
    await s.close()

    # case 5: <= 40 MiB free when the worker makes its first matmul
    s = Scheduler(tel, LocalLauncher(spare=False, extra_env={"GPUTUI_FAULT_PAUSE": "first_matmul:5"}))
    fut = s.submit_load(glm)
    await wait_stage(s, "chatglm3", "warming_cublas")
    await asyncio.sleep(2.5)  # the worker has made its CUDA context and waits before its first matmul
    h, free = hog(40)
    try:
        rec = await fut
        say(case=5, what="40 MiB free at first matmul", hog_left_free_mib=free, state=rec.state, error=rec.error)
        Path(os.environ.get("OUT", "/tmp"), "case5_error.txt").write_text(rec.error or "")
        # doctor, with the GPU still full, explains the exact message
        out = subprocess.run([sys.executable, "-m", "gputui", "doctor", "--explain", rec.error or ""],
                             capture_output=True, text=True)
        say(case=5, what="doctor --explain while the GPU is full", output=out.stdout)
    finally:
        h.kill()
        h.wait()
    await s.close()

    # case 16: a real device-side assert during a request
    s = Scheduler(tel, LocalLauncher(spare=False, extra_env={"GPUTUI_FAULT_DEVICE_ASSERT": "generate"}))
    rec = await s.load(glm)
    first = rec.pid
    events = [e async for e in s.chat("chatglm3", {"messages": [{"role": "user", "content": "hi"}]})]
    t0 = time.monotonic()
    while not (s.models["chatglm3"].state == "ready" and s.models["chatglm3"].pid not in (None, first)):
        if time.monotonic() - t0 > 120:
            break
        await asyncio.sleep(0.05)
    again = s.models["chatglm3"]
    say(case=16, what="device-side assert in a request", reply=events[-1], state=again.state,
        restarted_in_s=round(time.monotonic() - t0, 2), old_pid=first, new_pid=again.pid,
        old_pid_on_gpu_mib=ours_on_gpu(tel, first) >> 20, restarts=again.restarts)
    await s.close()

    # case 19: the app (a scheduler process) is SIGKILLed with a model loaded
    app = subprocess.Popen([sys.executable, "-c", APP, str(root / "chatglm3-6b")], stdout=subprocess.PIPE, text=True)
    state, pid_text = app.stdout.readline().split()  # type: ignore[union-attr]
    worker = int(pid_text)
    held = ours_on_gpu(tel, worker)
    os.kill(app.pid, signal.SIGKILL)
    app.wait()
    t0 = time.monotonic()
    while ours_on_gpu(tel, worker) and time.monotonic() - t0 < 30:
        await asyncio.sleep(0.02)
    say(case=19, what="gputui SIGKILLed with a model loaded", state_before=state, worker_held_mib=held >> 20,
        worker_memory_gone_after_s=round(time.monotonic() - t0, 3), left_mib=ours_on_gpu(tel, worker) >> 20,
        free_back_mib=(tel.snapshot().gpus[0].free_bytes - free0) >> 20)


APP = """
import asyncio, sys
from gputui.hardware.nvml import NvmlTelemetry
from gputui.core.requests import ModelRequest
from gputui.scheduler import Scheduler
from gputui.scheduler.launcher import LocalLauncher

async def main():
    s = Scheduler(NvmlTelemetry(), LocalLauncher(spare=False))
    rec = await s.load(ModelRequest("chatglm3", "chatglm3", sys.argv[1], gpus=("0",), max_context=8192))
    print(rec.state, rec.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""

