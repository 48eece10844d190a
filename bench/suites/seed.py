"""The seed failure's GPU state: another process leaves less than ChatGLM3 needs (refused at
preflight, in one line, never a cuBLAS error), then just enough (it loads and answers)."""

from __future__ import annotations

import argparse

from bench.common import chat_text, checkpoints, hog, say
from bench.suites.ready import requests
from gputui.hardware.nvml import NvmlTelemetry
from gputui.scheduler import Scheduler
from gputui.scheduler.client import LocalClient
from gputui.scheduler.launcher import LocalLauncher


async def run(args: argparse.Namespace) -> None:
    glm, _blip = requests(checkpoints(args.root))
    client = LocalClient(Scheduler(NvmlTelemetry(), LocalLauncher(spare=False)))
    await client.start()
    first = await client.load(glm)  # for the need, and to compile the kernels once
    need = (first.predicted_bytes or 0) >> 20
    await client.unload("chatglm3")
    for leave in (need - 1024, need + 400):
        h, free = hog(leave)
        try:
            view = await client.load(glm)
            say(step="load_under_hog", hog_left_free_mib=free, need_mib=need, state=view.state.value,
                error=view.error, stage_reached=view.stage)
            if view.ready:
                _t, done = await chat_text(client, "chatglm3", {"messages": [{"role": "user", "content": "hi"}],
                                                                "params": {"max_new_tokens": 8, "ignore_stop": True}})
                say(step="chat_under_hog", finish=done.get("event"), new_tokens=done.get("new_tokens"))
                await client.unload("chatglm3")
        finally:
            h.kill()
            h.wait()
    await client.close()
