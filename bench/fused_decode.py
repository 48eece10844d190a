#!/usr/bin/env python3
"""The fused decode step against the stock forward, both as CUDA graphs (device only).

python bench/fused_decode.py CHATGLM3_DIR   prints JSON lines: Triton JIT seconds, agreement
with the stock forward (bf16), tok/s of each path at 1k and 7k tokens of context, and the
kernels per step.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import StaticCache

from gputui.models.chatglm3 import load_chatglm3
from gputui.models.decode_graph import GraphDecodeStep
from gputui.models.glm_decode import GlmDecodeStep
from gputui.models.gqa_attention import use_gqa_attention
from gputui.models.hf import cache_keyword


def say(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


dev = torch.device("cuda")
model = load_chatglm3(sys.argv[1], device=dev, dtype=torch.bfloat16)
use_gqa_attention(model)
kw = cache_keyword(model)
CTX = 8192
cache = StaticCache(config=model.config, max_cache_len=CTX)


@torch.inference_mode()
def prefill(n: int, m: object = None, c: object = None) -> None:
    m, c = m or model, c or cache
    c.reset()
    g = torch.Generator().manual_seed(n)
    ids = torch.randint(100, 60000, (1, n), generator=g).to(dev)
    for s in range(0, n, 1024):
        chunk = ids[:, s:s + 1024]
        m(input_ids=chunk, **{kw: c}, cache_position=torch.arange(s, s + chunk.shape[1], device=dev),
          use_cache=True, logits_to_keep=1)


prefill(1024)
torch.cuda.synchronize()
t = time.perf_counter()
fused = GlmDecodeStep(model, cache, dev)
with torch.inference_mode():
    fused(torch.tensor([[5]], device=dev), torch.tensor([1024], device=dev))
torch.cuda.synchronize()
say(step="triton_first_call", seconds=round(time.perf_counter() - t, 2), backend=fused.backend)

# agreement, teacher-forced: the same tokens through the stock bf16 forward, the fused bf16
# step and a float32 copy of the model (the reference), each from its own prefilled cache
ref_model = load_chatglm3(sys.argv[1], device=dev, dtype=torch.float32)
use_gqa_attention(ref_model)
ref_cache = StaticCache(config=ref_model.config, max_cache_len=2048)
prefill(1024, ref_model, ref_cache)
prefill(1024)
fused_cache_copy = [(lay.keys.clone(), lay.values.clone()) for lay in cache.layers]
tokens = [5, 77, 1234, 999, 31337, 42, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]


@torch.inference_mode()
def stock_logits(m: object, c: object) -> list[torch.Tensor]:
    return [m(input_ids=torch.tensor([[t]], device=dev), **{kw: c}, cache_position=torch.tensor([1024 + i], device=dev),
              use_cache=True).logits[0, -1].float() for i, t in enumerate(tokens)]


ref = stock_logits(ref_model, ref_cache)
stock = stock_logits(model, cache)
for lay, (k, v) in zip(cache.layers, fused_cache_copy, strict=True):
    with torch.inference_mode():
        lay.keys.copy_(k)
        lay.values.copy_(v)
with torch.inference_mode():
    fused_out = [fused(torch.tensor([[t]], device=dev), torch.tensor([1024 + i], device=dev)).float()
                 for i, t in enumerate(tokens)]


def rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> dict:
    e = [float((x - y).norm() / y.norm()) for x, y in zip(a, b, strict=True)]
    top = sum(int(x.argmax() == y.argmax()) for x, y in zip(a, b, strict=True))
    return {"rel_l2_mean": round(sum(e) / len(e), 4), "rel_l2_max": round(max(e), 4), "same_argmax": f"{top}/{len(a)}"}


say(step="agreement", stock_bf16_vs_fp32=rel(stock, ref), fused_bf16_vs_fp32=rel(fused_out, ref),
    fused_vs_stock=rel(fused_out, stock))
del ref_model, ref_cache, ref
torch.cuda.empty_cache()

stock_graph = GraphDecodeStep(model, cache, dev)
fused_graph = GraphDecodeStep(model, cache, dev, fused)


def speed(graph: GraphDecodeStep, start: int, n: int = 256) -> float:
    tid = 5
    graph(tid, start)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(n):
        tid = int(graph(tid, start + 1 + i).argmax())  # a real loop syncs on every token too
    return n / (time.perf_counter() - t0)


for ctx in (1024, 7000):
    prefill(ctx)
    for label, g in (("stock", stock_graph), ("fused", fused_graph)):
        rates = [round(speed(g, ctx), 1) for _ in range(2)]
        say(step="decode_speed", path=label, context=ctx, tok_s=rates)


def kernels(fn) -> dict:
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        with torch.inference_mode():
            fn()
        torch.cuda.synchronize()
    evs = [e for e in prof.events() if e.device_type.name == "CUDA"]
    return {"kernels": len(evs), "gpu_ms": round(sum(e.device_time for e in evs) / 1000, 3)}


prefill(1024)
say(step="one_step_eager", stock=kernels(lambda: model(input_ids=torch.tensor([[5]], device=dev), **{kw: cache},
                                                      cache_position=torch.tensor([1024], device=dev), use_cache=True)),
    fused=kernels(lambda: fused(torch.tensor([[5]], device=dev), torch.tensor([1025], device=dev))))
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    with torch.inference_mode():
        fused(torch.tensor([[5]], device=dev), torch.tensor([1026], device=dev))
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
