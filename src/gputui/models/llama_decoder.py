"""Llama-family checkpoints (Llama, Mistral, Qwen2) decoded on gputui's own decoder.

ChatGLM3's own model (glm/glm_model.GlmModel) is a Llama-shaped decoder: RMSNorm, q/k/v with
grouped KV heads, rotary, SwiGLU. Given Llama's rotary pairing (rotate_half, `neox`) and the
checkpoint's own frequencies (Llama 3 scales them), it computes these models' steps too, with
the Triton kernels between its GEMMs: about ten kernels a layer, where transformers' forward
replayed as a CUDA graph ran several times that (Llama-3-8B's step took 8.2 ms on the H200,
47 % of the read roofline; issue 28).

The weights stay where the loaded transformers model put them (views, no copy: q, k, v and
gate, up are row blocks apart in memory, RowBlocks); the KV cache is one slot of the context,
the bytes the preflight counted. A model this cannot compute exactly (a sliding window inside
the context, extra norms, biases it has no place for, scaled attention) keeps transformers'
forward; so does one whose logits disagree with it at warm-up.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from gputui.core.kinds import causal_lm_layers
from gputui.models.common.decode_graph import relative_error
from gputui.models.glm.glm_model import (
    GlmLayer,
    GlmModel,
    GlmShape,
    GlmWeights,
    KVCache,
    RowBlocks,
    Segment,
)
from gputui.models.glm.glm_steps import EagerSteps, GraphSteps, triton_parts

SUPPORTED = ("llama", "mistral", "qwen2")
# what a decoder layer may hold (anything else: a layer this decoder does not compute)
LAYER_PARAMETERS = {
    "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
    "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight", "self_attn.q_proj.bias",
    "self_attn.k_proj.bias", "self_attn.v_proj.bias", "mlp.gate_proj.weight", "mlp.up_proj.weight",
    "mlp.down_proj.weight",
}
# Logits of our step against transformers' forward, relative L2: bf16 rounding in different
# places stays well under this (the GLM checks measured up to 8 %); a wiring mistake is order 1.
AGREEMENT_TOLERANCE = 0.25


def refusal(model: Any, max_context: int) -> str | None:
    """Why gputui's decoder cannot compute this loaded model exactly, or None."""
    cfg = model.config
    if cfg.model_type not in SUPPORTED:
        return f"architecture {cfg.model_type} (own decoder: {', '.join(SUPPORTED)})"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act}"
    rotary = getattr(model.model, "rotary_emb", None)
    if rotary is None or float(getattr(rotary, "attention_scaling", 1.0)) != 1.0:
        return "a rotary embedding with attention scaling"
    head_dim = shape_of(model).head_dim
    if rotary.inv_freq.numel() * 2 != head_dim:
        return "a partial rotary embedding"
    for i, layer in enumerate(model.model.layers):
        extra = {n for n, _ in layer.named_parameters()} - LAYER_PARAMETERS
        if extra:
            return f"layer {i} holds {sorted(extra)[0]}"
    # the windows as transformers' cache sizes them (the preflight's reading of the config)
    windows = [w for w in causal_lm_layers(cfg.to_dict()) if w is not None and w < max_context]
    if windows:
        return f"a sliding window of {windows[0]} inside the {max_context}-token context"
    return None


def shape_of(model: Any) -> GlmShape:
    return shape_from_config(model.config, bias=model.model.layers[0].self_attn.q_proj.bias is not None)


def shape_from_config(cfg: Any, bias: bool = False) -> GlmShape:
    heads = int(cfg.num_attention_heads)
    d = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    return GlmShape(hidden=int(cfg.hidden_size), ffn=int(cfg.intermediate_size), layers=int(cfg.num_hidden_layers),
                    hq=heads, hkv=int(getattr(cfg, "num_key_value_heads", None) or heads), head_dim=d, rot=d,
                    eps=float(cfg.rms_norm_eps), theta=0.0, vocab=int(cfg.vocab_size),
                    max_positions=int(cfg.max_position_embeddings), qkv_bias=bias, neox=True)


def weights_of(model: Any) -> GlmWeights:
    """The loaded model's tensors as the decoder's weights (views: nothing copied)."""
    layers = []
    for lay in model.model.layers:
        a, m = lay.self_attn, lay.mlp
        bias = (RowBlocks((a.q_proj.bias, a.k_proj.bias, a.v_proj.bias)) if a.q_proj.bias is not None else None)
        layers.append(GlmLayer(lay.input_layernorm.weight, RowBlocks((a.q_proj.weight, a.k_proj.weight, a.v_proj.weight)),
                               bias, a.o_proj.weight, lay.post_attention_layernorm.weight,
                               RowBlocks((m.gate_proj.weight, m.up_proj.weight)), m.down_proj.weight))
    return GlmWeights(shape_of(model), model.model.embed_tokens.weight, layers, model.model.norm.weight,
                      model.lm_head.weight)


class OwnDecoder:
    """One stream over the decoder: a prompt prefilled in chunks, then one step per token (a CUDA
    graph on a GPU). Logits come back fp32 [vocab]."""

    def __init__(self, model: Any, device: torch.device, max_context: int, chunk: int, graph: bool) -> None:
        self.device, self.chunk = device, chunk
        weights = weights_of(model)
        s = weights.shape
        cache = KVCache(s, 1, max_context, device, weights.dtype, scratch=False)
        inv_freq = model.model.rotary_emb.inv_freq.float().to(device)
        attend, ops = triton_parts(s, inv_freq, device, rows=1)
        self.model = GlmModel(weights, cache, attend, ops, inv_freq=inv_freq)
        self.steps: EagerSteps = EagerSteps(self.model)
        self.graph_error: str | None = None
        self.kernels = "triton" if ops is not None else "torch"
        self._graph_wanted = graph

    def cache_bytes(self) -> int:
        return self.model.cache.nbytes()

    def prefill(self, ids: list[int]) -> torch.Tensor:
        tokens = torch.tensor(ids, device=self.device)
        logits = None
        for start in range(0, len(ids), self.chunk):
            part = tokens[start:start + self.chunk]
            logits = self.model.prefill_many([Segment(0, part, start, logits=start + self.chunk >= len(ids))])[0]
        assert logits is not None
        return logits

    def step(self, token_id: int, position: int) -> torch.Tensor:
        return self.steps.decode([token_id], [0], [position]).logits[0].float()

    def capture(self) -> None:
        """The one-row step as a CUDA graph (kept eager if capture fails)."""
        if not self._graph_wanted:
            return
        try:
            self.steps = GraphSteps(self.model, [1], None)
        except Exception as e:  # noqa: BLE001 - eager decoding still works
            self.graph_error = f"{type(e).__name__}: {e}"[:300]

    @torch.inference_mode()
    def disagreement(self, reference: Any, prompt: list[int]) -> str | None:
        """Our prefill and one step against transformers' forward on the same tokens (no cache),
        or why they differ."""
        nxt = prompt[-1]
        ours = [self.prefill(prompt), self.step(nxt, len(prompt))]
        ids = torch.tensor([prompt + [nxt]], device=self.device)
        full = reference(input_ids=ids, use_cache=False).logits[0].float()
        for what, got, want in (("prefill", ours[0], full[-2]), ("step", ours[1], full[-1])):
            err = relative_error(got, want)
            if not err <= AGREEMENT_TOLERANCE:
                return f"its {what} disagrees with transformers' forward (relative error {err:.3g})"
        return None


def start_precompile(config: Any, device: torch.device, dtype: torch.dtype, max_context: int
                     ) -> threading.Thread | None:
    """The decoder's Triton kernels compiled while the weights load, each on its own thread (LLVM
    and ptxas run outside the GIL): on a fresh machine they took ~5 s of the warm-up. None where
    they will not run (no GPU or no Triton: the PyTorch twins serve)."""
    from gputui.models.glm.glm_decode import fused_decode_enabled, triton_available

    if device.type != "cuda" or not triton_available() or not fused_decode_enabled():
        return None

    def compile_all() -> None:
        from gputui.models.glm.glm_triton import DecodeAttention, TritonRowOps

        s = shape_from_config(config)

        def zeros(*size: int, dt: torch.dtype = dtype) -> torch.Tensor:
            return torch.zeros(*size, dtype=dt, device=device)

        ops = TritonRowOps(s, zeros(s.head_dim // 2, dt=torch.float32))
        att = DecodeAttention(s.hq, s.hkv, s.head_dim, device, rows=1)
        cache = (1, s.hkv, max_context, s.head_dim)
        one = zeros(1, dt=torch.long)
        jobs = [lambda: ops.norm(zeros(1, s.hidden), zeros(s.hidden)),
                lambda: ops.rope_cache(zeros(1, s.qkv_rows), zeros(*cache), zeros(*cache), one, one),
                lambda: ops.silu_mul(zeros(1, 2 * s.ffn)),
                lambda: att(zeros(1, s.hq, s.head_dim), zeros(*cache), zeros(*cache), one, 1.0,
                            zeros(1, s.hq * s.head_dim), one)]

        def run(job: Any) -> None:
            stream = torch.cuda.Stream(device)
            with torch.cuda.stream(stream), torch.inference_mode():
                job()
            stream.synchronize()

        run(jobs[0])  # the first launch sets up Triton's driver, alone
        threads = [threading.Thread(target=run, args=(job,), name="gputui-triton-compile") for job in jobs[1:]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def guarded() -> None:
        try:
            compile_all()
        except Exception:  # noqa: BLE001 - the warm-up's own first calls compile, or fail and fall back
            pass

    thread = threading.Thread(target=guarded, name="gputui-triton-precompile", daemon=True)
    thread.start()
    return thread
