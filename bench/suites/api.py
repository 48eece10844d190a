"""The OpenAI-compatible API on a real GPU (issue 26): `gputui serve --api`, ChatGLM3-6B loaded;
first token and tok/s of a streamed completion as a client sees them, against the same reply
through `gputui chat`; /metrics scraped; four streams at once."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
from typing import Any

import aiohttp

from bench.common import checkpoints, say
from bench.suites.ready import requests
from bench.suites.server import start_server
from gputui.api.chat import ChatRequest
from gputui.remote.client import RemoteClient
from gputui.remote.lifecycle import socket_path

TOKENS = 256
PROMPT = [{"role": "user", "content": "Tell me about the history of the printing press."}]


async def stream_once(session: aiohttp.ClientSession, max_tokens: int = TOKENS) -> dict[str, Any]:
    body = {"model": "chatglm3", "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    t0 = time.monotonic()
    first = None
    usage: dict[str, Any] = {}
    async with session.post("http://localhost/v1/chat/completions", json=body) as response:
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                first = first or time.monotonic()
            if chunk.get("usage"):
                usage = chunk["usage"]
    n = usage.get("completion_tokens", 0)
    wall = time.monotonic() - t0
    return {"first_text_s": round((first or t0) - t0, 4), "tokens": n, "wall_s": round(wall, 3),
            "tok_s_whole_reply": round(n / wall, 1)}


async def control_socket_once(client: RemoteClient, max_tokens: int = TOKENS) -> dict[str, Any]:
    """The same request through gputui's own socket (what `gputui chat` uses): the API's cost is
    the difference. (Random weights: the tokenizer's stream decoder holds back bytes that are not
    yet UTF-8, so the first text comes later than the first token on both paths.)"""
    request = ChatRequest(tuple(PROMPT), params={"max_new_tokens": max_tokens, "temperature": 0, "ignore_stop": True})
    t0 = time.monotonic()
    first, stats = None, {}
    async for ev in client.chat("chatglm3", request):
        if ev.event == "text" and ev.text and first is None:
            first = time.monotonic()
        if ev.event == "done":
            stats = dict(ev.stats)
    wall = time.monotonic() - t0
    return {"first_text_s": round((first or t0) - t0, 4), "tokens": stats.get("new_tokens"), "wall_s": round(wall, 3),
            "tok_s_whole_reply": round((stats.get("new_tokens") or 0) / wall, 1),
            "server_ttft_s": round(stats.get("ttft_s") or 0, 4), "server_tok_s": round(stats.get("tokens_per_s") or 0, 1)}


def chat_once(env: dict[str, str]) -> dict[str, Any]:
    t = time.monotonic()
    chat = subprocess.Popen([sys.executable, "-m", "gputui", "chat", "chatglm3", "--max-new-tokens", str(TOKENS),
                             "--temperature", "0"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert chat.stdin is not None and chat.stdout is not None
    chat.stdin.write(PROMPT[0]["content"] + "\n")
    chat.stdin.close()
    chat.stdout.read(1)
    first = time.monotonic() - t
    chat.wait(300)
    err = chat.stderr.read() if chat.stderr else ""
    stats = next((x for x in err.splitlines() if "tok/s" in x), "")
    m = re.search(r"first token (\d+) ms · ([\d.]+) tok/s", stats)
    return {"first_char_from_launch_s": round(first, 3), "server_ttft_ms": int(m.group(1)) if m else None,
            "server_tok_s": float(m.group(2)) if m else None, "stats": stats, "wall_s": round(time.monotonic() - t, 3)}


async def run(args: argparse.Namespace) -> None:
    glm, _blip = requests(checkpoints(args.root))
    server, env = start_server("api", "--api")
    client = await RemoteClient.connect(socket_path(demo=False))
    view = await client.load(glm)
    say(step="loaded", state=view.state.value, error=view.error, runtime=view.runtime)
    api_sock = client.server["api"]["socket"]
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=api_sock),
                                         timeout=aiohttp.ClientTimeout(total=600)) as session:
            await stream_once(session, 8)  # the first request of a fresh server pays for nothing else
            for attempt in range(3):
                say(step="api_stream", attempt=attempt, **(await stream_once(session)))
                say(step="control_socket_stream", attempt=attempt, **(await control_socket_once(client)))
            for attempt in range(2):
                say(step="gputui_chat", attempt=attempt, **chat_once(env))
            t = time.monotonic()
            async with session.get("http://localhost/metrics") as response:
                text = await response.text()
            say(step="metrics_scrape", seconds=round(time.monotonic() - t, 4), lines=len(text.splitlines()),
                tokens=[x for x in text.splitlines() if x.startswith("gputui_generated_tokens_total")])
            t = time.monotonic()
            four = await asyncio.gather(*(stream_once(session) for _ in range(4)))
            wall = time.monotonic() - t
            say(step="api_four_at_once", wall_s=round(wall, 2), each=four,
                aggregate_tok_s=round(sum(r["tokens"] for r in four) / wall, 1))
    finally:
        await client.close()
        stop = subprocess.run([sys.executable, "-m", "gputui", "stop"], env=env, capture_output=True, text=True,
                              timeout=120)
        say(step="stop", output=stop.stdout.strip().splitlines(), server_exit=server.wait(60))
