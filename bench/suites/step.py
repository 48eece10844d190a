"""Where a ChatGLM3-6B decode step's time goes, in this process (no worker): the runtime loaded
as the worker loads it, then the GPU time of one captured step (replays back to back), the same
step with its GEMVs left out and with everything but its GEMVs left out, and the token loop's
own rate (the GPU time plus what the host adds between tokens)."""

from __future__ import annotations

import argparse

from bench.common import checkpoints, replay_seconds, say

CONTEXTS = (16, 1024, 6144)


async def run(args: argparse.Namespace) -> None:
    import torch

    from gputui.models.common.decode_graph import capture
    from gputui.models.glm.chatglm3_runtime import ChatGLM3Runtime
    from gputui.models.glm.glm_decode import GlmDecodeStep

    path = checkpoints(args.root) / "chatglm3-6b"
    dev = torch.device("cuda:0")
    rt = ChatGLM3Runtime.load({"path": str(path), "max_context": 8192}, [dev], torch.bfloat16)
    rt.warm_up()
    weights = rt.weight_bytes()
    say(step="loaded", decode=rt.decode_kind, fused_check=rt.fused_check, fused_error=rt.fused_error,
        weight_gb=round(weights / 1e9, 3))
    step = rt.graph_step
    fused: GlmDecodeStep = step.step_fn
    ids = torch.tensor([[5]], device=dev)
    for ctx in CONTEXTS:
        pos = torch.tensor([ctx], device=dev)
        parts: dict[str, float] = {}
        real_gemv, real_attend = fused._gemv, fused._attend
        for label in ("whole", "without_gemvs", "gemvs_only"):
            if label == "without_gemvs":
                fused._gemv = lambda w, x, out, **kw: out
            if label == "gemvs_only":
                fused._attend = lambda *a, **k: None  # type: ignore[method-assign]
            try:
                graph, _ = capture(lambda pos=pos: fused(ids, pos), dev)
                parts[label] = replay_seconds(graph)
            finally:
                fused._gemv, fused._attend = real_gemv, real_attend  # type: ignore[method-assign]
        from gputui.models.glm import gemv_triton

        gemv_triton.PDL = False  # the same step with every kernel waiting for the one before
        try:
            graph, _ = capture(lambda pos=pos: fused(ids, pos), dev)
            parts["whole_without_pdl"] = replay_seconds(graph)
        finally:
            gemv_triton.PDL = True
        say(step="gpu_step", context=ctx, **{f"{k}_ms": round(v * 1e3, 3) for k, v in parts.items()},
            tok_per_s_gpu=round(1 / parts["whole"], 1), gemv_gb_per_s=round(weights / parts["gemvs_only"] / 1e9, 1))
    # the worker's own loop: prompt of ~16 tokens, 256 new, greedy; then step by step
    say(step="run_ahead", on=rt.run_ahead is not None, error=rt.run_ahead_error)
    ahead = rt.run_ahead
    for label, use in (("run_ahead", ahead), ("step_by_step", None)):
        rt.run_ahead = use
        for attempt in range(2):
            stats = rt._decode([rt.tok.bos_id] * 16, 256, 0.0, 1.0, lambda *_a, **_k: None, lambda: False,
                               ignore_stop=True)
            say(step="loop", loop=label, attempt=attempt, tokens_per_s=round(stats["tokens_per_s"], 1),
                path=stats["decode_path"])
    rt.run_ahead = ahead
