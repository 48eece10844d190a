#!/usr/bin/env python3
"""Cost of the dashboard: one refresh (ms per GPU), CPU use at 2 Hz and 4 Hz, key-press latency.

python bench/refresh_bench.py [--gpus 8] [--real] [--seconds 10]
--real reads the machine's NVML; otherwise a SIMULATED server with --gpus GPUs, each with a few
processes. Runs the real app headless (Textual's pilot): rendering to a terminal is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from gputui.core.units import GiB


def make_backend(real: bool, gpus: int):  # type: ignore[no-untyped-def]
    if real:
        from gputui.hardware.nvml import NvmlTelemetry

        return NvmlTelemetry()
    from gputui.hardware.simulated import SimulatedServer, make_gpus

    server = SimulatedServer(make_gpus(gpus))
    for i, g in enumerate(server.gpus):
        for j in range(3):
            server.allocate(g.uuid, 1000 + 10 * i + j, (j + 1) * GiB, f"user{j}", f"python job{j}.py --gpu {i}")
    return server


def snapshot_cost(backend, n: int = 200) -> dict:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        snap = backend.snapshot()
        times.append(time.perf_counter() - t0)
    per = statistics.median(times) * 1000
    return {"snapshot_ms": round(per, 3), "per_gpu_ms": round(per / max(1, len(snap.gpus)), 3), "gpus": len(snap.gpus)}


async def app_cost(backend, interval: float, seconds: float) -> dict:  # type: ignore[no-untyped-def]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--real", action="store_true")
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    backend = make_backend(a.real, a.gpus)
    out = {"backend": backend.backend, **snapshot_cost(backend)}
    for interval in (0.5, 0.25):
        out[f"app_{interval}"] = asyncio.run(app_cost(backend, interval, a.seconds))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
