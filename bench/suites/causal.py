"""Kind causal-lm on a real GPU (issue 28): a Llama-3-8B-shaped and a Qwen2.5-7B-shaped
checkpoint (random weights, bf16) behind `gputui serve`: preflight against measured memory,
ready time (cold, then with the worker warm), decode tok/s against the read roofline; then three
models side by side on one GPU (ChatGLM3, BLIP2 and the Llama), each answering."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from bench.common import checkpoints, say
from bench.make_checkpoints import CAUSAL_LMS
from bench.suites.ready import requests
from bench.suites.server import start_server
from gputui.api.chat import ChatRequest
from gputui.core.requests import ModelRequest
from gputui.remote.client import RemoteClient
from gputui.remote.lifecycle import socket_path

READ_TB_S = 4.23  # the H200's plain read (bench gemv, session 6): the roofline's denominator


def made(root: Path, name: str) -> Path:
    folder = root / name
    if not (folder / "model.safetensors.index.json").is_file():
        t = time.monotonic()
        subprocess.run([sys.executable, str(Path(__file__).parents[1] / "make_checkpoints.py"), str(root),
                        "--only", name], check=True)
        say(step="written", model=name, seconds=round(time.monotonic() - t, 1))
    return folder


async def run(args: argparse.Namespace) -> None:
    root = checkpoints(args.root)
    glm, blip = requests(root)
    server, env = start_server("causal")
    client = await RemoteClient.connect(socket_path(demo=False))
    try:
        for name in CAUSAL_LMS:
            path = made(root, name)
            for attempt in ("cold", "again"):
                req = ModelRequest(name, "causal-lm", str(path), gpus=("0",), max_context=8192)
                t = time.monotonic()
                view = await client.load(req)
                say(step="load", model=name, attempt=attempt, state=view.state.value, error=view.error,
                    seconds=round(time.monotonic() - t, 2), timings=view.timings, runtime=view.runtime,
                    predicted_mib=(view.predicted_bytes or 0) >> 20, measured_mib=(view.measured_bytes or 0) >> 20,
                    error_pct=round(100 * ((view.measured_bytes or 0) - (view.predicted_bytes or 1))
                                    / (view.predicted_bytes or 1), 2))
                if view.state.value != "ready":
                    break
                if attempt == "again":
                    for _ in range(2):
                        r = await _reply(client, name)
                        weights = sum(p.stat().st_size for p in path.glob("*.safetensors"))
                        roof = READ_TB_S * 1e12 / weights
                        say(step="decode", model=name, **r, roofline_tok_s=round(roof, 1),
                            of_roofline_pct=round(100 * (r["server_tok_s"] or 0) / roof, 1))
                await client.unload(name)
        # three models side by side, in the fixed order
        llama = ModelRequest("llama", "causal-lm", str(root / "llama-3-8b"), gpus=("0",), max_context=8192)
        for req in (glm, blip, llama):
            view = await client.load(req)
            say(step="side_by_side_load", model=req.name, state=view.state.value, error=view.error,
                measured_mib=(view.measured_bytes or 0) >> 20)
        for name in ("chatglm3", "llama"):
            say(step="side_by_side_answer", model=name, **(await _reply(client, name, 32)))
        image = Path("/tmp/gputui-bench-causal/cat.png")
        from PIL import Image

        Image.new("RGB", (224, 224), (200, 120, 40)).save(image)
        text = ""
        async for ev in client.chat("blip2", ChatRequest(image=str(image), question="what is this?")):
            text += ev.text if ev.event == "text" else ""
            if ev.event in ("done", "error"):
                say(step="side_by_side_answer", model="blip2", event=ev.event, chars=len(text))
    finally:
        await client.close()
        stop = subprocess.run([sys.executable, "-m", "gputui", "stop"], env=env, capture_output=True, text=True,
                              timeout=120)
        say(step="stop", output=stop.stdout.strip().splitlines(), server_exit=server.wait(60))


async def _reply(client: RemoteClient, name: str, tokens: int = 256) -> dict:
    return await control_socket_once_named(client, name, tokens)


async def control_socket_once_named(client: RemoteClient, name: str, tokens: int) -> dict:
    request = ChatRequest(({"role": "user", "content": "Tell me about the printing press."},),
                          params={"max_new_tokens": tokens, "temperature": 0, "ignore_stop": True})
    t0 = time.monotonic()
    stats: dict = {}
    async for ev in client.chat(name, request):
        if ev.event == "done":
            stats = dict(ev.stats)
        if ev.event == "error":
            return {"error": ev.text}
    wall = time.monotonic() - t0
    return {"tokens": stats.get("new_tokens"), "wall_s": round(wall, 3), "server_ttft_s": round(stats.get("ttft_s") or 0, 4),
            "server_tok_s": round(stats.get("tokens_per_s") or 0, 1), "decode_path": stats.get("decode_path"),
            "decoder": stats.get("decoder")}
