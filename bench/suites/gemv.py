"""The decode GEMVs alone, on ChatGLM3-6B's shapes (random bf16 weights, 28 layers' worth of each
so nothing stays in L2): GB/s of a plain read (the roofline), of cuBLAS (F.linear), and of
gputui's Triton GEMV for each tile configuration, each shape's 28 launches replayed as one CUDA
graph; then the fused variants (norm, bias, residual add, SiLU) at the chosen configuration,
and every matmul of a decode step in one graph (tok/s if the matmuls were the whole step)."""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from bench.common import say

LAYERS = 28
HIDDEN, FFN, QKV, VOCAB = 4096, 13696, 4608, 65024
SHAPES = {"qkv": (QKV, HIDDEN), "o": (HIDDEN, HIDDEN), "gate_up": (2 * FFN, HIDDEN), "down": (HIDDEN, FFN)}
CONFIGS = list(itertools.product((4, 8, 16), (512, 1024, 2048), (4, 8)))


def timed_graph(fn: Any, reps: int = 20) -> float:
    """Seconds per call of `fn`, captured once as a CUDA graph and replayed."""
    import torch

    from gputui.models.decode_graph import capture

    graph, _ = capture(fn, torch.device("cuda"))
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000 / reps


def read_seconds(nbytes: int) -> float:
    """One plain read of `nbytes` (a sum over a bf16 tensor of that size): the roofline."""
    import torch

    flat = torch.empty(nbytes // 2, device="cuda", dtype=torch.bfloat16).normal_()
    return timed_graph(lambda: torch.sum(flat, dtype=torch.float32))


async def run(args: argparse.Namespace) -> None:
    import torch

    from gputui.models.gemv_reference import ADD_TO_OUT, SILU_PAIR
    from gputui.models.gemv_triton import config_for, gemv

    dev, dt = torch.device("cuda"), torch.bfloat16
    torch.manual_seed(0)
    weights = {name: [torch.randn(n, k, device=dev, dtype=dt) * 0.02 for _ in range(LAYERS)]
               for name, (n, k) in SHAPES.items()}
    head = torch.randn(VOCAB, HIDDEN, device=dev, dtype=dt) * 0.02
    total = sum(w.numel() * 2 for ws in weights.values() for w in ws) + head.numel() * 2
    xs = {k: torch.randn(k, device=dev, dtype=dt) for k in (HIDDEN, FFN)}
    outs = {n: torch.empty(n, device=dev, dtype=dt) for n in (QKV, HIDDEN, 2 * FFN, FFN, VOCAB)}

    sec = read_seconds(total)
    roof = total / sec / 1e9
    say(step="read_roofline", gb=round(total / 1e9, 2), gb_per_s=round(roof, 1), tok_per_s=round(1 / sec, 1))

    for name, (n, k) in SHAPES.items():
        ws, x, out = weights[name], xs[k], outs[n]
        nbytes = sum(w.numel() * 2 for w in ws)
        sec = timed_graph(lambda ws=ws, x=x, out=out: [torch.matmul(w, x, out=out) for w in ws])
        say(step="cublas", shape=name, n=n, k=k, gb_per_s=round(nbytes / sec / 1e9, 1))
        best = None
        for cfg in CONFIGS:
            try:
                sec = timed_graph(lambda ws=ws, x=x, out=out, cfg=cfg: [gemv(w, x, out, config=cfg) for w in ws])
            except Exception as e:  # noqa: BLE001 - a config that does not compile is a result
                say(step="triton", shape=name, config=cfg, error=f"{type(e).__name__}: {e}"[:200])
                continue
            gbs = nbytes / sec / 1e9
            best = max(best or (0.0, cfg), (gbs, cfg))
            say(step="triton", shape=name, config=cfg, gb_per_s=round(gbs, 1))
        say(step="best", shape=name, config=best[1] if best else None, gb_per_s=round(best[0], 1) if best else None,
            of_roofline=round(best[0] / roof, 3) if best else None)
    hbytes = head.numel() * 2
    sec = timed_graph(lambda: torch.matmul(head, xs[HIDDEN], out=outs[VOCAB]))
    say(step="cublas", shape="head", gb_per_s=round(hbytes / sec / 1e9, 1))
    sec = timed_graph(lambda: gemv(head, xs[HIDDEN], outs[VOCAB]))
    say(step="triton", shape="head", config=config_for(VOCAB, HIDDEN), gb_per_s=round(hbytes / sec / 1e9, 1))

    # every matmul of one decode step, fused as the step runs them, in one graph
    ln = torch.ones(HIDDEN, device=dev, dtype=dt)
    bias = torch.zeros(QKV, device=dev, dtype=dt)
    res = torch.randn(HIDDEN, device=dev, dtype=dt)
    attn, act = torch.randn(HIDDEN, device=dev, dtype=dt), torch.randn(FFN, device=dev, dtype=dt)

    def fused_matmuls() -> None:
        for i in range(LAYERS):
            gemv(weights["qkv"][i], res, outs[QKV], bias=bias, norm=(ln, 1e-5))
            gemv(weights["o"][i], attn, res, epilogue=ADD_TO_OUT)
            gemv(weights["gate_up"][i], res, act, norm=(ln, 1e-5), epilogue=SILU_PAIR)
            gemv(weights["down"][i], act, res, epilogue=ADD_TO_OUT)
        gemv(head, res, outs[VOCAB], norm=(ln, 1e-5))

    def cublas_matmuls() -> None:
        for i in range(LAYERS):
            torch.addmv(bias, weights["qkv"][i], res, out=outs[QKV])
            torch.matmul(weights["o"][i], attn, out=outs[HIDDEN])
            torch.matmul(weights["gate_up"][i], res, out=outs[2 * FFN])
            torch.matmul(weights["down"][i], act, out=outs[HIDDEN])
        torch.matmul(head, res, out=outs[VOCAB])

    for label, fn in (("fused_triton", fused_matmuls), ("cublas", cublas_matmuls)):
        sec = timed_graph(fn)
        say(step="step_matmuls", path=label, gb_per_s=round(total / sec / 1e9, 1), of_roofline=round(total / sec / 1e9 / roof, 3),
            tok_per_s_if_only_matmuls=round(1 / sec, 1), ms=round(sec * 1e3, 3))
