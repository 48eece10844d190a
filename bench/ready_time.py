#!/usr/bin/env python3
"""Command -> ready for ChatGLM3-6B shapes with a warm spare worker, three times in a row
(device only; page cache warm). Prints seconds and the stage timings of each."""

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


async def main(root: Path) -> None:
    launcher = LocalLauncher(spare=True)
    s = Scheduler(NvmlTelemetry(), launcher)
    req = ModelRequest("chatglm3", "chatglm3", str(root / "chatglm3-6b"), gpus=("0",), max_context=8192)
    for i in range(3):
        launcher.warm_spare()
        await asyncio.shield(launcher._spare)  # type: ignore[arg-type]  # the spare is up before the command
        t0 = time.monotonic()
        rec = await s.load(req)
        dt = time.monotonic() - t0
        print(json.dumps({"run": i, "state": rec.state, "command_to_ready_s": round(dt, 2),
                          "timings": {k: round(v, 2) for k, v in rec.ready_report.get("timings", {}).items()}}), flush=True)
        await s.unload("chatglm3")
    await s.close()


asyncio.run(main(Path(sys.argv[1])))
