#!/usr/bin/env python3
"""gputui's scheduler on a real GPU (device only): load, answer, decode speed, hog, unload.

python bench/scheduler_proof.py ROOT   (ROOT from make_checkpoints.py); prints JSON lines.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from gputui.core.requests import ModelRequest
from gputui.core.units import MiB
from gputui.hardware.nvml import NvmlTelemetry
from gputui.scheduler import Scheduler
from gputui.scheduler.launcher import LocalLauncher

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hog import start as start_hog  # noqa: E402


def say(**kw: object) -> None:
    print(json.dumps(kw, default=str), flush=True)


hog = start_hog  # bench/hog.py


async def chat_text(s: Scheduler, name: str, req: dict) -> tuple[str, dict]:
    text, last = "", {}
    async for e in s.chat(name, req):
        text += e.get("text", "")
        last = e
    return text, last


async def spare_ready(launcher: LocalLauncher) -> None:
    if launcher._spare is not None:  # noqa: SLF001 - bench looks inside
        await asyncio.shield(launcher._spare)


async def main(root: Path) -> None:
    tel = NvmlTelemetry()
    launcher = LocalLauncher(spare=True)
    s = Scheduler(tel, launcher)
    glm_req = ModelRequest("chatglm3", "chatglm3", str(root / "chatglm3-6b"), gpus=("0",), max_context=8192)
    blip_req = ModelRequest("blip2", "blip2", str(root / "blip2-opt-2.7b"), gpus=("0",), dtype="float16", max_context=512)
    launcher.warm_spare()
    await spare_ready(launcher)

    # 1. command -> ready, with a warm spare worker, fast loader
    for label, req in (("chatglm3", glm_req), ("blip2", blip_req)):
        t0 = time.monotonic()
        rec = await s.load(req)
        dt = time.monotonic() - t0
        est = rec.estimate.total_bytes if rec.estimate else None
        err = None if rec.measured_bytes is None or est is None else (est - rec.measured_bytes) / rec.measured_bytes
        say(step="load", model=label, state=rec.state, error=rec.error, seconds=round(dt, 2),
            timings=rec.ready_report.get("timings"), predicted_mib=(est or 0) >> 20,
            measured_mib=(rec.measured_bytes or 0) >> 20, estimate_error=err,
            parts_mib={k: v >> 20 for k, v in rec.estimate.parts().items()} if rec.estimate else None,
            torch_reserved_mib=rec.ready_report.get("torch_reserved_bytes", 0) >> 20,
            runtime=rec.ready_report.get("runtime"), devices=rec.ready_report.get("devices"))
        await spare_ready(launcher)
        nvml_uuid = tel.snapshot().gpus[0].uuid  # fault 18: the worker's own UUID is the one we show
        say(step="uuid_check", model=label, worker_uuid=(rec.ready_report.get("devices") or [{}])[0].get("uuid"),
            nvml_uuid=nvml_uuid)

    # 2. both answer
    text, done = await chat_text(s, "chatglm3", {"messages": [{"role": "user", "content": "hello, who are you?"}],
                                                 "params": {"max_new_tokens": 16, "temperature": 0}})
    say(step="chat", model="chatglm3", text=text, stats=done)
    from PIL import Image

    img = Path("/tmp/cat.png")
    Image.new("RGB", (224, 224), (180, 120, 60)).save(img)
    for i in range(3):  # the first answer after Ready vs the next ones
        text, done = await chat_text(s, "blip2", {"image": str(img), "question": "what is in the picture?",
                                                  "params": {"max_new_tokens": 30, "ignore_stop": True}})
        say(step="chat", model="blip2", round=i, text=text, stats=done)

    # 3. decode speed: 1k-token prompt, 256 new tokens (stop ids ignored: random weights)
    long_text = " ".join(["The quick brown fox jumps over the lazy dog."] * 130)
    for _ in range(2):
        _t, done = await chat_text(s, "chatglm3", {"messages": [{"role": "user", "content": long_text}],
                                                   "params": {"max_new_tokens": 256, "temperature": 0, "ignore_stop": True}})
        say(step="decode_bench", stats=done)

    # 4. another user fills the GPU after ready: the next chat still works
    h, free = hog(8)
    try:
        _t, done = await chat_text(s, "chatglm3", {"messages": [{"role": "user", "content": long_text}],
                                                   "params": {"max_new_tokens": 64, "temperature": 0, "ignore_stop": True}})
        say(step="chat_after_gpu_filled", hog_left_free_mib=free, finish=done.get("event"), stats=done)
    finally:
        h.kill()
        h.wait()

    # 5. unload: memory back (NVML), seconds
    for name in ("blip2", "chatglm3"):
        measured = s.models[name].measured_bytes
        res = await s.unload(name)
        say(step="unload", model=name, measured_mib=(measured or 0) >> 20,
            returned_mib=(res.get("returned_bytes") or 0) >> 20,
            returned_ratio=(res.get("returned_bytes") or 0) / measured if measured else None, **res)

    # 6. the seed scenario's GPU state (another process leaves too little): refused, no cuBLAS error
    need = s.models["chatglm3"].estimate.total_bytes >> 20
    for leave in (need - 1024, need + 400):
        h, free = hog(leave)
        try:
            await spare_ready(launcher)
            t0 = time.monotonic()
            rec = await s.load(glm_req)
            say(step="load_under_hog", hog_left_free_mib=free, need_mib=need, state=rec.state, error=rec.error,
                stage_reached=rec.stage, seconds=round(time.monotonic() - t0, 2),
                timings=rec.ready_report.get("timings") if rec.ready_report else None)
            if rec.state == "ready":
                _t, done = await chat_text(s, "chatglm3", {"messages": [{"role": "user", "content": "hi"}],
                                                           "params": {"max_new_tokens": 8, "ignore_stop": True}})
                say(step="chat_under_hog", stats=done)
                await s.unload("chatglm3")
        finally:
            h.kill()
            h.wait()

    # 7. ready time without the spare / without the fast loader (--quick skips it)
    variants = (("no_spare", {}, False), ("pageable_loader", {"GPUTUI_FAST_LOAD": "0"}, True))
    for label, env, spare in variants if "--quick" not in sys.argv else ():
        s2 = Scheduler(tel, LocalLauncher(spare=spare, extra_env=env))
        if spare:
            s2.launcher.warm_spare()  # type: ignore[attr-defined]
            await spare_ready(s2.launcher)  # type: ignore[arg-type]
        t0 = time.monotonic()
        rec = await s2.load(glm_req)
        say(step="ready_time_variant", variant=label, state=rec.state, seconds=round(time.monotonic() - t0, 2),
            timings=rec.ready_report.get("timings"))
        await s2.close()
    await s.close()
    say(step="end", free_mib=tel.snapshot().gpus[0].free_bytes // MiB)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
