"""ChatGLM3-6B decode speed through the worker, batch 1, 8k context cache: tok/s at prompt
lengths 16, 1k and 6k (256 new tokens, stop ids ignored: the weights are random), the decode
path taken, and what the first load spent compiling its kernels."""

from __future__ import annotations

import argparse

from bench.common import chat_text, checkpoints, say
from bench.suites.ready import requests
from gputui.hardware.nvml import NvmlTelemetry
from gputui.scheduler import Scheduler
from gputui.scheduler.client import LocalClient
from gputui.scheduler.launcher import LocalLauncher

PROMPT_TOKENS = (16, 1024, 6144)


def prompt_of(path: str, tokens: int) -> str:
    """Text that ChatGLM3's tokenizer makes about `tokens` tokens of (the chat frame adds ~10)."""
    from gputui.models.glm.chatglm3_tokenizer import ChatGLM3Tokenizer

    tok = ChatGLM3Tokenizer(path)
    per = len(tok.encode("hello world " * 100)) / 100
    return "hello world " * max(1, int((tokens - 10) / per))


async def run(args: argparse.Namespace) -> None:
    glm, _blip = requests(checkpoints(args.root))
    client = LocalClient(Scheduler(NvmlTelemetry(), LocalLauncher(spare=False)))
    await client.start()
    view = await client.load(glm)
    say(step="loaded", state=view.state.value, error=view.error, decode=view.runtime.get("decode"),
        fused_check=view.runtime.get("fused_check"), fused_error=view.runtime.get("fused_error"),
        load=view.runtime.get("load"), timings=view.timings)
    for target in PROMPT_TOKENS:
        text = prompt_of(glm.path, target)
        for attempt in range(2):  # the first at each length warms nothing new; both are reported
            _t, done = await chat_text(client, "chatglm3", {
                "messages": [{"role": "user", "content": text}],
                "params": {"max_new_tokens": 256, "temperature": 0, "ignore_stop": True}})
            say(step="decode", target_prompt_tokens=target, attempt=attempt, prompt_tokens=done.get("prompt_tokens"),
                new_tokens=done.get("new_tokens"), tokens_per_s=done.get("tokens_per_s"), ttft_s=done.get("ttft_s"),
                decode_path=done.get("decode_path"), finish=done.get("event"), error=done.get("message"))
    await client.close()
