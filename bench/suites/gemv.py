"""The decode GEMVs alone, on ChatGLM3-6B's shapes (random bf16 weights, 28 layers' worth of each
so nothing stays in L2): GB/s of a plain read (the roofline), of cuBLAS (F.linear), and of
gputui's Triton GEMV for each tile configuration, each shape's 28 launches replayed as one CUDA
graph; then the fused variants (norm, bias, residual add, SiLU) at the chosen configuration,
and every matmul of a decode step in one graph (tok/s if the matmuls were the whole step)."""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from bench.common import replay_seconds, say

LAYERS = 28
HIDDEN, FFN, QKV, VOCAB = 4096, 13696, 4608, 65024
SHAPES = {"qkv": (QKV, HIDDEN), "o": (HIDDEN, HIDDEN), "gate_up": (2 * FFN, HIDDEN), "down": (HIDDEN, FFN)}
CONFIGS = list(itertools.product((2, 4, 8), (1024, 2048, 4096), (4, 8)))


def timed_graph(fn: Any, reps: int = 20) -> float:
    """Seconds per call of `fn`, captured once as a CUDA graph and replayed."""
    import torch

    from gputui.models.common.decode_graph import capture

    graph, _ = capture(fn, torch.device("cuda"))
    return replay_seconds(graph, reps)


def read_seconds(nbytes: int) -> float:
    """One plain read of `nbytes` (a sum over a bf16 tensor of that size): the roofline."""
    import torch

    flat = torch.empty(nbytes // 2, device="cuda", dtype=torch.bfloat16).normal_()
    return timed_graph(lambda: torch.sum(flat, dtype=torch.float32))


def best_of(fn: Any, tries: int = 3) -> float:
    """The fastest of a few timings (each 30 replays): other work on the GPU only slows one down."""
    return min(timed_graph(fn, reps=30) for _ in range(tries))


async def run(args: argparse.Namespace) -> None:
    import torch

    from gputui.models.glm.gemv_reference import ADD_TO_OUT, SILU_PAIR
    from gputui.models.glm.gemv_triton import RopeCache, config_for, gemv

    dev, dt = torch.device("cuda"), torch.bfloat16
    torch.manual_seed(0)
    weights = {name: [torch.randn(n, k, device=dev, dtype=dt) * 0.02 for _ in range(LAYERS)]
               for name, (n, k) in SHAPES.items()}
    weights["head"] = [torch.randn(VOCAB, HIDDEN, device=dev, dtype=dt) * 0.02]
    total = sum(w.numel() * 2 for ws in weights.values() for w in ws)
    sec = read_seconds(total)
    roof = total / sec / 1e9
    say(step="read_roofline", gb=round(total / 1e9, 2), gb_per_s=round(roof, 1), tok_per_s=round(1 / sec, 1))

    ln = torch.ones(HIDDEN, device=dev, dtype=dt)
    bias = torch.zeros(QKV, device=dev, dtype=dt)
    res = torch.randn(HIDDEN, device=dev, dtype=dt)
    attn, act = torch.randn(HIDDEN, device=dev, dtype=dt), torch.randn(FFN, device=dev, dtype=dt)
    outs = {n: torch.empty(n, device=dev, dtype=dt) for n in (QKV, HIDDEN, 2 * FFN, VOCAB)}
    q_out = torch.empty(HIDDEN, device=dev, dtype=dt)
    kv_cache = [torch.zeros(2, 8192, 128, device=dev, dtype=dt) for _ in range(2)]
    rope = RopeCache(kv_cache[0], kv_cache[1], torch.tensor([100], device=dev),
                     torch.rand(32, device=dev, dtype=torch.float32), 32, 2, 128, 64)
    # each GEMV as the decode step runs it: (input, output, fused options), and cuBLAS's plain one
    variants = {
        "qkv": (res, q_out, dict(bias=bias, norm=(ln, 1e-5), rope=rope)),
        "o": (attn, res, dict(epilogue=ADD_TO_OUT)),
        "gate_up": (res, act, dict(norm=(ln, 1e-5), epilogue=SILU_PAIR)),
        "down": (act, res, dict(epilogue=ADD_TO_OUT)),
        "head": (res, outs[VOCAB], dict(norm=(ln, 1e-5))),
    }
    cublas = {
        "qkv": lambda w: torch.addmv(bias, w, res, out=outs[QKV]),
        "o": lambda w: torch.matmul(w, attn, out=outs[HIDDEN]),
        "gate_up": lambda w: torch.matmul(w, res, out=outs[2 * FFN]),
        "down": lambda w: torch.matmul(w, act, out=outs[HIDDEN]),
        "head": lambda w: torch.matmul(w, res, out=outs[VOCAB]),
    }
    chosen: dict[str, tuple[int, int, int]] = {}
    for name, (x, out, kw) in variants.items():
        ws = weights[name]
        nbytes = sum(w.numel() * 2 for w in ws)
        sec = best_of(lambda ws=ws, name=name: [cublas[name](w) for w in ws])
        say(step="cublas", shape=name, n=ws[0].shape[0], k=ws[0].shape[1], gb_per_s=round(nbytes / sec / 1e9, 1))
        results = []
        for cfg in CONFIGS:
            try:
                sec = best_of(lambda ws=ws, x=x, out=out, kw=kw, cfg=cfg: [gemv(w, x, out, config=cfg, **kw) for w in ws])
            except Exception as e:  # noqa: BLE001 - a config that does not compile is a result
                say(step="triton", shape=name, config=cfg, error=f"{type(e).__name__}: {e}"[:200])
                continue
            results.append((nbytes / sec / 1e9, cfg))
        results.sort(reverse=True)
        chosen[name] = results[0][1]
        say(step="triton", shape=name, in_use=config_for(ws[0].shape[0], ws[0].shape[1]),
            ranked=[(cfg, round(g, 1)) for g, cfg in results])
        say(step="best", shape=name, config=results[0][1], gb_per_s=round(results[0][0], 1),
            of_roofline=round(results[0][0] / roof, 3))

    def fused_matmuls(pick: Any) -> Any:
        def run() -> None:
            for i in range(LAYERS):
                for name in ("qkv", "o", "gate_up", "down"):
                    x, out, kw = variants[name]
                    gemv(weights[name][i], x, out, config=pick(name), **kw)
            x, out, kw = variants["head"]
            gemv(weights["head"][0], x, out, config=pick("head"), **kw)
        return run

    def cublas_matmuls() -> None:
        for i in range(LAYERS):
            for name in ("qkv", "o", "gate_up", "down"):
                cublas[name](weights[name][i])
        cublas["head"](weights["head"][0])

    in_use = {name: config_for(*weights[name][0].shape) for name in variants}
    for label, fn, configs in (("triton_in_use", fused_matmuls(in_use.get), in_use),
                               ("triton_best", fused_matmuls(chosen.get), chosen), ("cublas", cublas_matmuls, None)):
        sec = best_of(fn)
        say(step="step_matmuls", path=label, configs=configs, gb_per_s=round(total / sec / 1e9, 1),
            of_roofline=round(total / sec / 1e9 / roof, 3), tok_per_s_if_only_matmuls=round(1 / sec, 1),
            ms=round(sec * 1e3, 3))
