"""Both real-size models through the client seam: command -> ready with a warm spare, then from
cold (no spare: the worker's imports included), predicted vs measured memory, both answer, and
unload with NVML's memory back."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from bench.common import chat_text, checkpoints, say
from gputui.core.requests import ModelRequest
from gputui.hardware.nvml import NvmlTelemetry
from gputui.scheduler import Scheduler
from gputui.scheduler.client import LocalClient
from gputui.scheduler.launcher import LocalLauncher


def requests(root: Path) -> tuple[ModelRequest, ModelRequest]:
    return (ModelRequest("chatglm3", "chatglm3", str(root / "chatglm3-6b"), gpus=("0",), max_context=8192),
            ModelRequest("blip2", "blip2", str(root / "blip2-opt-2.7b"), gpus=("0",), dtype="float16", max_context=512))


async def spares_ready(launcher: LocalLauncher) -> None:
    """Until every spare has said hello and finished its model imports (really warm)."""
    for task in list(launcher._spares.values()):  # noqa: SLF001 - the bench waits for the warm spares
        handle = await asyncio.shield(task)
        await handle.imported.wait()


async def load_both(client: LocalClient, reqs: tuple[ModelRequest, ...], label: str, t_start: float) -> None:
    for req in reqs:
        t0 = time.monotonic()
        view = await client.load(req)
        err = None
        if view.measured_bytes and view.predicted_bytes:
            err = round((view.predicted_bytes - view.measured_bytes) / view.measured_bytes, 4)
        say(step=label, model=req.name, state=view.state.value, error=view.error,
            seconds=round(time.monotonic() - t0, 2), since_start_s=round(time.monotonic() - t_start, 2),
            predicted_mib=(view.predicted_bytes or 0) >> 20, measured_mib=(view.measured_bytes or 0) >> 20,
            estimate_error=err, timings=view.timings, runtime=view.runtime)


async def run(args: argparse.Namespace) -> None:
    root = checkpoints(args.root)
    reqs = requests(root)
    tel = NvmlTelemetry()

    # cold: a fresh scheduler, no spare - what a first `gputui --profile` pays, imports included
    cold = LocalClient(Scheduler(tel, LocalLauncher(spare=False)))
    await cold.start()
    await load_both(cold, reqs, "ready_cold", time.monotonic())
    await cold.close()

    # warm: a spare worker per kind, warmed first (a dashboard that has been open a while)
    launcher = LocalLauncher(spare=True)
    client = LocalClient(Scheduler(tel, launcher), warm=("chatglm3", "blip2"))
    await client.start()
    await spares_ready(launcher)
    await load_both(client, reqs, "ready_warm", time.monotonic())

    text, done = await chat_text(client, "chatglm3", {"messages": [{"role": "user", "content": "hello"}],
                                                      "params": {"max_new_tokens": 16, "temperature": 0}})
    say(step="answer", model="chatglm3", finish=done.get("event"), new_tokens=done.get("new_tokens"))
    from PIL import Image

    img = Path("/tmp/bench-image.png")
    Image.new("RGB", (224, 224), (180, 120, 60)).save(img)
    _t, done = await chat_text(client, "blip2", {"image": str(img), "question": "what is it?",
                                                 "params": {"max_new_tokens": 16}})
    say(step="answer", model="blip2", finish=done.get("event"), new_tokens=done.get("new_tokens"))

    for name in ("blip2", "chatglm3"):
        view = client.model(name)
        res = await client.unload(name)
        measured = view.measured_bytes if view else None
        say(step="unload", model=name, returned=res.returned, seconds=res.seconds, returncode=res.returncode,
            measured_mib=(measured or 0) >> 20, returned_mib=(res.returned_bytes or 0) >> 20,
            returned_ratio=round(res.returned_bytes / measured, 4) if measured and res.returned_bytes else None)
    await client.close()
    say(step="end", free_mib=(tel.snapshot().gpus[0].free_bytes or 0) >> 20)
