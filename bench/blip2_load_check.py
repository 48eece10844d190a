#!/usr/bin/env python3
"""BLIP2-OPT-2.7B through the scheduler with a warm spare (device only): ready time, predicted vs
measured memory, which loader ran, and one answer. python bench/blip2_load_check.py ROOT"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from PIL import Image

from gputui.core.requests import ModelRequest
from gputui.hardware.nvml import NvmlTelemetry
from gputui.scheduler import Scheduler
from gputui.scheduler.launcher import LocalLauncher


async def main(root: Path) -> None:
    launcher = LocalLauncher(spare=True)
    s = Scheduler(NvmlTelemetry(), launcher)
    launcher.warm_spare()
    img = root / "probe.png"
    Image.new("RGB", (224, 224), (180, 120, 60)).save(img)
    req = ModelRequest("blip2", "blip2", str(root / "blip2-opt-2.7b"), gpus=("0",), dtype="float16", max_context=512)
    for i in range(2):
        await asyncio.shield(launcher._spare)  # type: ignore[arg-type]  # noqa: SLF001
        t0 = time.monotonic()
        rec = await s.load(req)
        seconds = round(time.monotonic() - t0, 2)
        done = [e async for e in s.chat("blip2", {"image": str(img), "question": "what is this?",
                                                  "params": {"max_new_tokens": 30, "ignore_stop": True}})][-1]
        print(json.dumps({"load": i, "state": rec.state, "error": rec.error, "seconds": seconds,
                          "stages": {k: round(v, 2) for k, v in (rec.ready_report.get("timings") or {}).items()},
                          "predicted_mib": (rec.predicted_bytes or 0) >> 20, "measured_mib": (rec.measured_bytes or 0) >> 20,
                          "torch_reserved_mib": rec.ready_report.get("torch_reserved_bytes", 0) >> 20,
                          "runtime": rec.ready_report.get("runtime"), "tok_s": done.get("tokens_per_s")}), flush=True)
        await s.unload("blip2")
    await s.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
