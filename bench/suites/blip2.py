"""BLIP2-OPT-2.7B answers through the worker: first token and tok/s over 64-token answers
(stop ids ignored: random weights), the decode path; then, in this process, the same greedy
answers from our graphed step and from transformers' generate(), compared."""

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
    img = Path("/tmp/bench-image.png")
    Image.new("RGB", (224, 224), (180, 120, 60)).save(img)
    if args.quick:  # only our graphed step against generate(), in this process
        compare_with_generate(blip.path, str(img))
        return
    client = LocalClient(Scheduler(NvmlTelemetry(), LocalLauncher(spare=False)))
    await client.start()
    view = await client.load(blip)
    say(step="loaded", state=view.state.value, error=view.error, timings=view.timings, runtime=view.runtime)
    for i in range(4):
        _t, done = await chat_text(client, "blip2", {"image": str(img), "question": "what is in the picture?",
                                                     "params": {"max_new_tokens": 64, "ignore_stop": True}})
        say(step="answer", round=i, new_tokens=done.get("new_tokens"), tokens_per_s=done.get("tokens_per_s"),
            ttft_s=done.get("ttft_s"), decode_path=done.get("decode_path"), finish=done.get("event"),
            error=done.get("message"))
    await client.close()
    compare_with_generate(blip.path, str(img))


def compare_with_generate(path: str, image: str) -> None:
    import torch

    from gputui.models.blip2.runtime import Blip2Runtime

    rt = Blip2Runtime.load({"path": path, "max_context": 512}, [torch.device("cuda:0")], torch.float16)
    rt.warm_up()
    say(step="step", decode=rt.decode_kind, check=rt.decode_check, error=rt.decode_error)
    step = rt.step
    for question in ("", "what is in the picture?", "what colour is it?"):
        got = {}
        for label, use in (("graph", step), ("generate", None)):
            rt.step = use
            stats = rt.generate({"image": image, "question": question,
                                 "params": {"max_new_tokens": 64, "ignore_stop": True}}, lambda *a, **k: None, lambda: False)
            got[label] = (list(rt.last_tokens), stats["tokens_per_s"], stats["text"])
        a, b = got["graph"][0], got["generate"][0]
        same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        say(step="vs_generate", question=question, equal=a == b, same_tokens=same, tokens=len(b),
            distinct_tokens=len(set(b)), text_chars=len(got["generate"][2]),
            graph_tok_s=got["graph"][1], generate_tok_s=got["generate"][1])
