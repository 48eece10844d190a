#!/usr/bin/env python3
"""The dashboard on a real GPU (device only): a process that allocates 10 GiB beside it shows
with its memory within one refresh, and is gone within one refresh after it exits.

Runs the real app headless through Textual's pilot, reading NVML. Prints JSON lines, and the
panel's text as a user would read it.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time

from rich.console import Console
from textual.widgets import Static

from gputui.hardware.nvml import NvmlTelemetry
from gputui.tui.app import make_app

ALLOC = "import torch, time, sys; x = torch.empty(10 << 30, dtype=torch.uint8, device='cuda'); print('ok', flush=True); time.sleep(60)"


def screen_text(app) -> str:  # type: ignore[no-untyped-def]
    console = Console(width=160, record=True, file=io.StringIO())
    for w in app.screen.query(Static):
        console.print(w.content)
    return console.export_text()


async def main() -> None:
    interval = 0.5
    app = make_app(NvmlTelemetry(), interval=interval)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(1.5)
        p = subprocess.Popen([sys.executable, "-c", ALLOC], stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().startswith("ok")
        t0 = time.monotonic()
        while str(p.pid) not in screen_text(app):
            await asyncio.sleep(0.02)
            assert time.monotonic() - t0 < 10
        seen = time.monotonic() - t0
        text = screen_text(app)
        row = next(line for line in text.splitlines() if str(p.pid) in line)
        print(json.dumps({"appeared_after_s": round(seen, 3), "interval_s": interval, "row": row.strip()}), flush=True)
        print(text, flush=True)
        p.kill()
        p.wait()
        t0 = time.monotonic()
        while str(p.pid) in screen_text(app):
            await asyncio.sleep(0.02)
            assert time.monotonic() - t0 < 10
        print(json.dumps({"gone_after_s": round(time.monotonic() - t0, 3)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
