"""The dashboard's cost: one refresh (ms per GPU), CPU at 2 Hz and 4 Hz, key-press to screen.

`python -m bench dashboard [--real]`: --real reads this machine's NVML; otherwise a SIMULATED
server with 8 GPUs, each with a few processes. The real app runs headless (Textual's pilot), so
drawing to a terminal is not counted (the terminal's bytes are measured in tmux: RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from bench.common import say
from gputui.core.units import GiB

GPUS = 8
SECONDS = 10.0


def make_backend(real: bool, gpus: int) -> Any:
    if real:
        from gputui.hardware.nvml import NvmlTelemetry

        return NvmlTelemetry()
    from gputui.hardware.simulated import SimulatedServer, make_gpus

    server = SimulatedServer(make_gpus(gpus))
    for i, g in enumerate(server.gpus):
        for j in range(3):
            server.allocate(g.uuid, 1000 + 10 * i + j, (j + 1) * GiB, f"user{j}", f"python job{j}.py --gpu {i}")
    return server


def snapshot_cost(backend: Any, n: int = 200) -> dict[str, Any]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        snap = backend.snapshot()
        times.append(time.perf_counter() - t0)
    per = statistics.median(times) * 1000
    return {"snapshot_ms": round(per, 3), "per_gpu_ms": round(per / max(1, len(snap.gpus)), 3), "gpus": len(snap.gpus)}


async def app_cost(backend: Any, interval: float, seconds: float) -> dict[str, Any]:
    from gputui.tui.app import GpuTuiApp

    class Timed(GpuTuiApp):
        """Records when the screen has been redrawn after the key's action ran."""

        drawn: asyncio.Event

        def action_toggle_side(self) -> None:
            # a visible change, so the screen really repaints (there is no side panel here)
            self.dashboard.set_status(f"key {time.perf_counter()}")
            self.dashboard.call_after_refresh(self.drawn.set)

    app = Timed(backend, interval=interval)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause(1.0)  # mount everything first
        n0 = app.snapshots_applied
        c0, w0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        refreshes = app.snapshots_applied - n0
        lat = []
        for _ in range(20):
            app.drawn = asyncio.Event()
            t0 = time.perf_counter()
            app.post_message(__import__("textual.events", fromlist=["Key"]).Key("f", "f"))
            await app.drawn.wait()
            lat.append(time.perf_counter() - t0)
            await asyncio.sleep(0.13)
    return {"interval_s": interval, "refreshes": refreshes, "cpu_percent_of_one_core": round(100 * cpu / wall, 2),
            "key_to_screen_ms_median": round(statistics.median(lat) * 1000, 1),
            "key_to_screen_ms_max": round(max(lat) * 1000, 1)}


async def run(args: argparse.Namespace) -> None:
    backend = make_backend(args.real, GPUS)
    say(step="snapshot", backend=backend.backend, **snapshot_cost(backend))
    for interval in (0.5, 0.25):
        say(step="app", backend=backend.backend, **await app_cost(backend, interval, SECONDS))
