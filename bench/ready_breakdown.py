#!/usr/bin/env python3
"""Where command -> ready goes for ChatGLM3-6B, with a warm spare (device only): the first load
(Triton's cache cold), a second (warm), and one with the fused step off (no kernel precompile).

python bench/ready_breakdown.py ROOT   prints JSON lines.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from gputui.core.requests import ModelRequest
from gputui.hardware.nvml import NvmlTelemetry
from gputui.scheduler import Scheduler
from gputui.scheduler.launcher import LocalLauncher


async def run(label: str, env: dict[str, str], loads: int, req: ModelRequest, tel: NvmlTelemetry) -> None:
    launcher = LocalLauncher(spare=True, extra_env=env)
    s = Scheduler(tel, launcher)
    launcher.warm_spare()
    for i in range(loads):
        await asyncio.shield(launcher._spare)  # type: ignore[arg-type]  # noqa: SLF001
        t0 = time.monotonic()
        rec = await s.load(req)
        seconds = round(time.monotonic() - t0, 2)
        rt = rec.ready_report.get("runtime") or {}
        events = [e async for e in s.chat("chatglm3", {"messages": [{"role": "user", "content": "hello " * 600}],
                                                       "params": {"max_new_tokens": 128, "temperature": 0,
                                                                  "ignore_stop": True}})]
        done = events[-1]
        print(json.dumps({"variant": label, "load": i, "state": rec.state, "seconds": seconds,
                          "stages": {k: round(v, 2) for k, v in (rec.ready_report.get("timings") or {}).items()},
                          "weights": rt.get("load"), "decode": rt.get("decode"),
                          "tok_s": round(done.get("tokens_per_s") or 0, 1), "ttft_s": round(done.get("ttft_s") or 0, 3),
                          "prompt_tokens": done.get("prompt_tokens")}), flush=True)
        await s.unload("chatglm3")
    await s.close()


async def main(root: Path) -> None:
    tel = NvmlTelemetry()
    req = ModelRequest("chatglm3", "chatglm3", str(root / "chatglm3-6b"), gpus=("0",), max_context=8192)
    if "--cold-twice" in sys.argv:  # two separate cold Triton caches: first-load time, twice
        await run("fused, Triton cache A", {"TRITON_CACHE_DIR": "/tmp/triton-a"}, 2, req, tel)
        await run("fused, Triton cache B", {"TRITON_CACHE_DIR": "/tmp/triton-b"}, 1, req, tel)
        return
    await run("fused (default)", {}, 3, req, tel)
    await run("fused off", {"GPUTUI_FUSED_DECODE": "0"}, 1, req, tel)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
