#!/usr/bin/env python3
"""A split ChatGLM3-6B on the one GPU the device tool lends (device only).

Two GPUs are not available here, so the split is checked in the two ways one GPU allows:
- "gpu+cpu": layers 0-25 on cuda:0, layers 26-27 and the head on the CPU. Every boundary move
  (hidden states, rotary cos/sin, positions, the KV cache made per device) is real and crosses
  devices; its logits and greedy tokens are compared with the model whole on the GPU.
- "gpu+gpu": ranges [0, 14) and [14, 28) both on cuda:0: the split model's decode as it runs
  for a user (the fused step in one CUDA graph per stage, the residual handed on between them),
  less the ~10 us per token that the hop between two real GPUs adds.

python bench/split_check.py ROOT   prints JSON lines.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from gputui.models.chatglm3_runtime import ChatGLM3Runtime

CTX = 2048
PROMPT = [{"role": "user", "content": "Tell me about the history of the printing press in Europe."}]


def load(path: Path, split: list[list[int]] | None, devices: list[torch.device]) -> tuple[ChatGLM3Runtime, float]:
    t0 = time.perf_counter()
    rt = ChatGLM3Runtime.load({"path": str(path), "max_context": CTX, "layer_split": split}, devices, torch.bfloat16)
    torch.cuda.synchronize()
    return rt, time.perf_counter() - t0


@torch.inference_mode()
def greedy(rt: ChatGLM3Runtime, n: int) -> tuple[torch.Tensor, list[int], float]:
    """Prompt logits, then n greedy tokens through the eager step; returns (logits, ids, tok/s)."""
    ids = rt.tok.chat_ids(PROMPT)
    first = rt._prefill(ids).float().cpu()  # noqa: SLF001
    logits, out, pos = first, [], len(ids)
    t0 = None
    for i in range(n):
        tid = int(logits.argmax())
        out.append(tid)
        if i == 1:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        logits = rt._step(tid, pos).float()  # noqa: SLF001
        pos += 1
    torch.cuda.synchronize()
    speed = (n - 2) / (time.perf_counter() - t0) if t0 is not None and n > 2 else 0.0
    return first, out, speed


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-6))


def main() -> None:
    path = Path(sys.argv[1]) / "chatglm3-6b"
    gpu, cpu = torch.device("cuda:0"), torch.device("cpu")
    whole, secs = load(path, None, [gpu])
    ref_logits, eager_ids, whole_eager = greedy(whole, 24)
    whole.warm_up()
    _, fused_ids, whole_fused = greedy(whole, 130)
    print(json.dumps({"case": "whole", "load_s": round(secs, 2), "eager_tok_s": round(whole_eager, 1),
                      "decode": whole.decode_kind, "tok_s": round(whole_fused, 1),
                      "read_gib_s": round(whole.load_timings.get("read_gib_s", 0), 1)}), flush=True)
    del whole
    torch.cuda.empty_cache()

    rt, secs = load(path, [[0, 26], [26, 28]], [gpu, cpu])
    placed = {str(p.device) for p in rt.model.model.layers[27].parameters()} | {str(rt.model.lm_head.weight.device)}
    logits, ids, _ = greedy(rt, 8)
    cache_devices = sorted({str(lay.keys.device) for lay in rt.cache.layers})
    print(json.dumps({"case": "gpu+cpu (eager)", "load_s": round(secs, 2), "tail_on": sorted(placed),
                      "cache_devices": cache_devices, "logits_rel_err": round(rel(logits, ref_logits), 4),
                      "greedy_equal_8": ids == eager_ids[:8],
                      "load": {k: round(v, 3) for k, v in rt.load_timings.items()}}), flush=True)
    del rt
    torch.cuda.empty_cache()

    rt, secs = load(path, [[0, 14], [14, 28]], [gpu, gpu])
    logits, ids, eager = greedy(rt, 24)
    rt.warm_up()
    _, ids, speed = greedy(rt, 130)
    print(json.dumps({"case": "gpu+gpu (staged graphs)", "load_s": round(secs, 2), "eager_tok_s": round(eager, 1),
                      "tok_s": round(speed, 1), "decode": rt.decode_kind, "fused_check": rt.fused_check,
                      "fused_error": rt.fused_error, "graph_error": rt.graph_error,
                      "logits_rel_err": round(rel(logits, ref_logits), 4), "greedy_equal_130": ids == fused_ids,
                      "first_difference": next((i for i, (a, b) in enumerate(zip(ids, fused_ids, strict=False)) if a != b), None),
                      "note": rt.decode_note()}), flush=True)


if __name__ == "__main__":
    main()
