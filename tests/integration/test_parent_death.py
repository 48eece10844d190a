"""Fault 19: gputui itself is killed. Its workers see EOF on their command pipe and exit, so
no orphan keeps GPU memory (here: a real worker that has loaded a tiny model on the CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

APP = """
import asyncio, sys
from gputui.hardware.simulated import SimulatedServer, make_gpus
from gputui.core.requests import ModelRequest
from gputui.scheduler import Scheduler
from gputui.scheduler.simulated_launcher import SimulatedLauncher

async def main():
    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, SimulatedLauncher(server, spare=False, threads=1))
    rec = await sched.load(ModelRequest("glm", "chatglm3", sys.argv[1], max_context=128))
    print(rec.state, rec.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"  # exited; only waiting for a reaper


def test_killing_gputui_ends_its_workers(tiny_chatglm3_path: Path) -> None:
    app = subprocess.Popen([sys.executable, "-c", APP, str(tiny_chatglm3_path)], stdout=subprocess.PIPE, text=True)
    try:
        line = app.stdout.readline().split()  # type: ignore[union-attr]
        assert line and line[0] == "ready", line
        worker = int(line[1])
        assert not gone(worker)
        os.kill(app.pid, signal.SIGKILL)
        app.wait()
        deadline = time.monotonic() + 15
        while not gone(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(worker), f"worker {worker} outlived the killed app"
    finally:
        app.kill()
