#!/usr/bin/env python3
"""The background-compiled decode path in a real worker (device only): chat right after ready
(eager graph), keep chatting while it compiles, then measure the compiled path."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from gputui.hardware.nvml import NvmlTelemetry
from gputui.scheduler import ModelRequest, Scheduler
from gputui.scheduler.launcher import LocalLauncher


async def main(root: Path) -> None:
    s = Scheduler(NvmlTelemetry(), LocalLauncher(spare=False))
    rec = await s.load(ModelRequest("chatglm3", "chatglm3", str(root / "chatglm3-6b"), gpus=("0",), max_context=8192))
    print(json.dumps({"ready": rec.state, "measured_mib": (rec.measured_bytes or 0) >> 20,
                      "predicted_mib": rec.estimate.total_bytes >> 20 if rec.estimate else None}), flush=True)
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 130)
    req = {"messages": [{"role": "user", "content": text}], "params": {"max_new_tokens": 256, "temperature": 0, "ignore_stop": True}}
    t0 = time.monotonic()
    for _ in range(40):
        done = {}
        async for e in s.chat("chatglm3", req):
            done = e
        keep = ("tokens_per_s", "ttft_s", "decode_path", "compile", "compile_seconds", "prompt_tokens")
        print(json.dumps({"t": round(time.monotonic() - t0, 1), **{k: done.get(k) for k in keep}}), flush=True)
        if done.get("decode_path") == "compiled" or str(done.get("compile", "")).startswith("failed"):
            if done.get("decode_path") == "compiled":
                async for e in s.chat("chatglm3", req):
                    done = e
                print(json.dumps({"final": {k: done.get(k) for k in keep}}), flush=True)
            break
    snap = NvmlTelemetry().snapshot()
    held = [p.used_bytes >> 20 for p in snap.gpus[0].processes if p.pid == s.models["chatglm3"].pid]
    print(json.dumps({"nvml_mib_after_compile": held}), flush=True)
    await s.close()


asyncio.run(main(Path(sys.argv[1])))
