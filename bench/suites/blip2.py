"""BLIP2-OPT-2.7B answers through the worker: first token and tok/s over 64-token answers
(stop ids ignored: random weights)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.common import chat_text, checkpoints, say
from bench.suites.ready import requests
from gputui.hardware.nvml import NvmlTelemetry
from gputui.scheduler import Scheduler
from gputui.scheduler.client import LocalClient
from gputui.scheduler.launcher import LocalLauncher


async def run(args: argparse.Namespace) -> None:
    from PIL import Image

    _glm, blip = requests(checkpoints(args.root))
    client = LocalClient(Scheduler(NvmlTelemetry(), LocalLauncher(spare=False)))
    await client.start()
    view = await client.load(blip)
    say(step="loaded", state=view.state.value, error=view.error, timings=view.timings, runtime=view.runtime)
    img = Path("/tmp/bench-image.png")
    Image.new("RGB", (224, 224), (180, 120, 60)).save(img)
    for i in range(4):
        _t, done = await chat_text(client, "blip2", {"image": str(img), "question": "what is in the picture?",
                                                     "params": {"max_new_tokens": 64, "ignore_stop": True}})
        say(step="answer", round=i, new_tokens=done.get("new_tokens"), tokens_per_s=done.get("tokens_per_s"),
            ttft_s=done.get("ttft_s"), finish=done.get("event"), error=done.get("message"))
    await client.close()
