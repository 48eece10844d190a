"""Many streams at once (issue 27): ChatGLM3-6B with max_batch 32 behind `gputui serve --api`;
1/2/4/8/16/32 streamed completions sent together (short prompts, 256 new tokens each, 8k context
per slot); aggregate tok/s, time to first token p50/p95, each stream's tok/s. Before that, in
this process: the decode step's GPU time per batch size, and where it goes (GEMMs, attention,
the rest) from the profiler."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import subprocess
import sys
import time
from typing import Any

import aiohttp

from bench.common import checkpoints, say
from bench.suites.api import control_socket_once, stream_once
from bench.suites.ready import requests
from bench.suites.server import start_server
from gputui.remote.client import RemoteClient
from gputui.remote.lifecycle import socket_path

MAX_BATCH = 32
STREAMS = (1, 2, 4, 8, 16, 32)


def step_split(path: str) -> None:
    """The step alone, in this process: ms per graph replay at each batch size, and a profile of
    the eager step at 16 rows grouped by kernel family."""
    import torch

    from gputui.models.glm.glm_runtime import GlmRuntime

    rt = GlmRuntime.load({"path": path, "max_context": 8192, "max_batch": MAX_BATCH}, [torch.device("cuda:0")],
                         torch.bfloat16)
    rt.warm_up()
    assert rt.engine is not None and rt.steps is not None
    rt.engine.close()
    steps: Any = rt.steps
    say(step="runtime", info=rt.info())
    for m in (1, *STREAMS[1:]):
        ids, slots, pos = [5] * m, list(range(m)), [100 + 7 * i for i in range(m)]
        for _ in range(3):
            steps.decode(ids, slots, pos)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(50):
            steps.decode(ids, slots, pos)
        torch.cuda.synchronize()
        ms = (time.perf_counter() - t) / 50 * 1000
        say(step="graph_step", rows=m, ms=round(ms, 3), tok_s=round(m / ms * 1000, 1))
    engine_alone(rt, steps)
    model = steps.model
    for m in (8, 16, 32):
        t = torch.tensor([[5] * m, list(range(m)), [100] * m], device="cuda")
        model.decode(t[0], t[1], t[2])
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            model.decode(t[0], t[1], t[2])
            torch.cuda.synchronize()
        groups: dict[str, float] = {}
        kernels = 0
        for ev in prof.key_averages():
            us = ev.device_time_total if hasattr(ev, "device_time_total") else ev.cuda_time_total
            if us <= 0:
                continue
            name = ev.key.lower()
            kernels += ev.count
            fam = ("gemm" if any(k in name for k in ("gemm", "gemv", "cutlass", "sm90", "nvjet")) else
                   "attention" if "attn" in name else "rest")
            groups[fam] = groups.get(fam, 0.0) + us / 1000
        top = sorted(((ev.key[:60], round(ev.device_time_total / 1000, 3)) for ev in prof.key_averages()
                      if getattr(ev, "device_time_total", 0) > 0), key=lambda x: -x[1])[:8]
        say(step="eager_step_split", rows=m, ms={k: round(v, 3) for k, v in groups.items()}, kernels=kernels, top=top)
    del rt, steps, model
    torch.cuda.empty_cache()


def engine_alone(rt: Any, steps: Any) -> None:
    """The continuous batch in this process, no server: what the loop itself costs over the graphs."""
    from gputui.models.glm.glm_engine import BatchEngine

    ids = rt.tok.chat_ids([{"role": "user", "content": "Tell me about the history of the printing press."}])
    for n in (1, 8, 8, 16, 32, 32):  # twice: the first of a kind may pay for a first use
        engine = BatchEngine(steps, MAX_BATCH, rt.device)
        streams = [rt._stream(ids, 256, 0.0, 1.0, None, lambda _p: None, lambda: False, ignore_stop=True)
                   for _ in range(n)]
        t = time.perf_counter()
        for st in streams:
            engine.submit(st)
        engine.run_until_idle()
        wall = time.perf_counter() - t
        rates = sorted(st.stats()["tokens_per_s"] or 0 for st in streams)
        say(step="engine_alone", streams=n, aggregate_tok_s=round(n * 256 / wall, 1),
            per_stream_tok_s_median=round(statistics.median(rates), 1),
            ttft_max_s=round(max(st.stats()["ttft_s"] for st in streams), 4))


async def streams_at_once(client: RemoteClient, n: int) -> None:
    """n replies sent together through the server's socket (gputui chat's path); the first token
    as the worker saw it (random weights: the first *text* can come much later)."""
    t = time.monotonic()
    each = await asyncio.gather(*(control_socket_once(client) for _ in range(n)))
    wall = time.monotonic() - t
    ttft = sorted(r["server_ttft_s"] for r in each)
    p95 = ttft[min(len(ttft) - 1, round(0.95 * (len(ttft) - 1)))]
    say(step="streams", streams=n, wall_s=round(wall, 3), tokens=sum(r["tokens"] or 0 for r in each),
        aggregate_tok_s=round(sum(r["tokens"] or 0 for r in each) / wall, 1),
        ttft_p50_s=round(statistics.median(ttft), 4), ttft_p95_s=round(p95, 4),
        per_stream_tok_s=sorted(r["server_tok_s"] for r in each))


async def api_at_once(session: aiohttp.ClientSession, n: int) -> None:
    t = time.monotonic()
    each = await asyncio.gather(*(stream_once(session) for _ in range(n)))
    wall = time.monotonic() - t
    say(step="api_streams", streams=n, wall_s=round(wall, 3), tokens=sum(r["tokens"] for r in each),
        aggregate_tok_s=round(sum(r["tokens"] for r in each) / wall, 1))


async def run(args: argparse.Namespace) -> None:
    glm, _blip = requests(checkpoints(args.root))
    step_split(glm.path)
    server, env = start_server("concurrency", "--api")
    client = await RemoteClient.connect(socket_path(demo=False))
    t = time.monotonic()
    view = await client.load(dataclasses.replace(glm, max_batch=MAX_BATCH))
    say(step="loaded", state=view.state.value, error=view.error, seconds=round(time.monotonic() - t, 2),
        predicted_mib=(view.predicted_bytes or 0) >> 20, measured_mib=(view.measured_bytes or 0) >> 20,
        runtime=view.runtime)
    api_sock = client.server["api"]["socket"]
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=api_sock, limit=0),
                                         timeout=aiohttp.ClientTimeout(total=900)) as session:
            await stream_once(session, 8)
            for n in STREAMS:
                await streams_at_once(client, n)
            for n in (16, 32):
                await api_at_once(session, n)
        ps = subprocess.run([sys.executable, "-m", "gputui", "ps"], env=env, capture_output=True, text=True, timeout=60)
        say(step="ps", output=ps.stdout.strip().splitlines())
    finally:
        await client.close()
        stop = subprocess.run([sys.executable, "-m", "gputui", "stop"], env=env, capture_output=True, text=True,
                              timeout=120)
        say(step="stop", output=stop.stdout.strip().splitlines(), server_exit=server.wait(60))
