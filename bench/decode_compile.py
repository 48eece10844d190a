#!/usr/bin/env python3
"""Decode speed of ChatGLM3-6B shapes, batch 1, three ways (device only):

  graph     - our default: static cache + GQA decode attention + one CUDA graph per step (no compiler)
  compiled  - the same step through torch.compile (inductor fuses the small kernels), then a CUDA graph
  roofline  - weight bytes / measured device-to-device copy bandwidth
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
from transformers import StaticCache

from gputui.models.chatglm3 import load_chatglm3
from gputui.models.decode_graph import GraphDecodeStep
from gputui.models.gqa_attention import use_gqa_attention

path = sys.argv[1]
model = load_chatglm3(path, device="cuda", dtype=torch.bfloat16)
use_gqa_attention(model)
weights = sum(p.numel() * p.element_size() for p in model.parameters())
cache = StaticCache(config=model.config, max_cache_len=8192)
prompt = torch.randint(100, 60000, (1, 1024), device="cuda")


def prefill() -> None:
    with torch.inference_mode():
        cache.reset()
        model(input_ids=prompt, past_key_values=cache, cache_position=torch.arange(1024, device="cuda"), use_cache=True,
              logits_to_keep=1)


@torch.inference_mode()
def run(step, n: int = 256) -> float:  # type: ignore[no-untyped-def]
    prefill()
    tid, pos = 5, 1024
    torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(n):
        logits = step(tid, pos + i)
        tid = int(torch.argmax(logits).item())
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def copy_bw() -> float:
    x = torch.empty(4 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    torch.cuda.synchronize()
    bw = 2 * x.numel() * 10 / (time.perf_counter() - t)
    del x, y
    torch.cuda.empty_cache()
    return bw


bw = copy_bw()
out = {"weights_gb": weights / 1e9, "copy_gb_s": bw / 1e9, "roofline_tok_s": bw / weights}
prefill()
t = time.perf_counter()
g = GraphDecodeStep(model, cache, torch.device("cuda"))
out["graph_capture_s"] = time.perf_counter() - t
out["graph_tok_s"] = run(g)
print(json.dumps(out), flush=True)

try:
    if os.environ.get("SKIP_COMPILE"):
        raise SystemExit(0)
    ids = torch.zeros(1, 1, dtype=torch.long, device="cuda")
    pos_t = torch.zeros(1, dtype=torch.long, device="cuda")

    def fwd(ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids, past_key_values=cache, cache_position=pos, use_cache=True).logits[0, -1]

    compiled = torch.compile(fwd, mode=os.environ.get("COMPILE_MODE", "default"), dynamic=False, fullgraph=False)
    t = time.perf_counter()
    prefill()
    with torch.inference_mode():
        for i in range(3):
            pos_t.fill_(1024 + i)
            compiled(ids, pos_t)
    out["compile_s"] = time.perf_counter() - t

    class CompiledGraph:
        def __init__(self) -> None:
            self.graph = torch.cuda.CUDAGraph()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s), torch.inference_mode():
                for _ in range(2):
                    compiled(ids, pos_t)
            torch.cuda.current_stream().wait_stream(s)
            with torch.cuda.graph(self.graph), torch.inference_mode():
                self.logits = compiled(ids, pos_t)

        def __call__(self, tid: int, pos: int) -> torch.Tensor:
            ids.fill_(tid)
            pos_t.fill_(pos)
            self.graph.replay()
            return self.logits

    prefill()
    cg = CompiledGraph()
    out["compiled_graph_tok_s"] = run(cg)
except Exception as e:  # noqa: BLE001
    out["compiled_error"] = f"{type(e).__name__}: {e}"[:500]
print(json.dumps(out), flush=True)
