#!/usr/bin/env python3
"""Does the chat screen keep up with a fast model? (CPU; no GPU needed)

A fake worker streams N words at R tokens/s (the H100 decodes ChatGLM3-6B at ~195 tok/s); the
chat pane renders them as Markdown through Textual's pilot. Prints how far the screen lagged
behind the last token and how much CPU the app used.

python bench/chat_render.py [TOKENS] [RATE]
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.fake_worker import Behaviour, FakeLauncher  # noqa: E402

from gputui.core.requests import ModelRequest
from gputui.hardware.simulated import SimulatedServer, make_gpus  # noqa: E402
from gputui.models.tiny import tiny_chatglm3  # noqa: E402
from gputui.scheduler import Scheduler  # noqa: E402
from gputui.scheduler.client import LocalClient
from gputui.scheduler.timeline import Timeline  # noqa: E402
from gputui.tui.app import make_app  # noqa: E402
from gputui.tui.screens.chat import ChatScreen  # noqa: E402
from gputui.tui.widgets.chat_pane import ChatPane  # noqa: E402

TOKENS = int(sys.argv[1]) if len(sys.argv) > 1 else 600
RATE = float(sys.argv[2]) if len(sys.argv) > 2 else 200.0


async def main() -> None:
    os.environ["GPUTUI_DATA_DIR"] = tempfile.mkdtemp()
    words = [f"word{i}" + ("\n\n" if i % 40 == 39 else "") for i in range(TOKENS)]
    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, FakeLauncher(server, [Behaviour(reply=" ".join(words), token_delay=1 / RATE)]),
                      timeline=Timeline())
    app = make_app(server, interval=0.5, client=LocalClient(sched))
    async with app.run_test(size=(150, 44)) as pilot:
        await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3()), max_context=256))
        app.open_chat("glm")
        while not isinstance(app.screen, ChatScreen):
            await asyncio.sleep(0.02)
        await pilot.pause()
        pane = app.screen.query_one(ChatPane)
        pane.query_one("#prompt").value = "go"
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        await pilot.press("enter")
        while pane.replies < 1:
            await asyncio.sleep(0.005)
        t_done = time.perf_counter()  # the done event was handled: every token was written
        last = f"word{TOKENS - 1}"
        md = [w for w in pane.query("Markdown")][-1]
        while last not in md.source:
            await asyncio.sleep(0.005)
        await pilot.pause()
        t_shown = time.perf_counter()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        print(json.dumps({"tokens": TOKENS, "rate_tok_s": RATE, "stream_s": round(t_done - t0, 2),
                          "ideal_s": round(TOKENS / RATE, 2), "lag_after_last_token_s": round(t_shown - t_done, 3),
                          "app_cpu_percent_of_one_core": round(100 * cpu / (t_shown - t0), 1)}))
        await sched.close()


asyncio.run(main())
