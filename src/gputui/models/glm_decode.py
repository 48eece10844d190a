"""A hand-fused decode step for transformers' GlmForCausalLM (ChatGLM3), batch 1.

Why: after the CUDA graph, a ChatGLM3-6B step on an H100 was ~1,500 kernels, most of them tiny
element-wise ops (RMSNorm alone is six), and the step ran at 50% of the memory roofline.
torch.compile fuses them but costs ~45 s at start. This step does the same fusion by hand:
per layer one RMSNorm(+residual) kernel, one QKV matmul (ChatGLM3 stores q, k and v as one
tensor, so the three weights are one contiguous block), one rotary+cache-write kernel, a
split-K attention over only the filled part of the cache, the output matmul, RMSNorm, the
gate/up matmul, one SiLU*mul kernel and the down matmul. Prefill stays on the model's own
forward; both write the same static KV cache.

Two backends with one structure: "triton" (the GPU path, kernels in glm_triton) and "torch"
(plain PyTorch with the reference's numerics; used to check the Triton kernels and the weight
wiring against transformers' own forward in tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


class FusedDecodeUnsupported(RuntimeError):
    """The model or cache is not one this step knows how to run (the caller keeps the stock path)."""


@dataclass
class _Layer:
    ln1: torch.Tensor
    wqkv: torch.Tensor | None  # None: q, k, v are not one block in memory
    bqkv: torch.Tensor | None
    q_k_v: tuple[Any, Any, Any]
    wo: torch.Tensor
    ln2: torch.Tensor
    wgu: torch.Tensor
    wd: torch.Tensor
    k_cache: torch.Tensor  # [kv_heads, max_len, head_dim]
    v_cache: torch.Tensor


def joint_rows(parts: list[torch.Tensor]) -> torch.Tensor | None:
    """One view over tensors that lie back to back in memory (row blocks of one matrix), or None."""
    if any(p is None for p in parts):
        return None
    first = parts[0]
    if not all(p.is_contiguous() and p.dtype == first.dtype and p.device == first.device for p in parts):
        return None
    ptr = first.data_ptr()
    for p in parts:
        if p.data_ptr() != ptr:
            return None
        ptr += p.numel() * p.element_size()
    rows = sum(p.shape[0] for p in parts)
    return first.as_strided((rows, *first.shape[1:]), first.stride())


def cache_tensors(cache: Any, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    layers = getattr(cache, "layers", None)
    if layers is not None:
        lay = layers[layer]
        keys, values = getattr(lay, "keys", None), getattr(lay, "values", None)
    else:
        keys, values = cache.key_cache[layer], cache.value_cache[layer]
    if not isinstance(keys, torch.Tensor) or keys.dim() != 4 or keys.shape[0] != 1:
        raise FusedDecodeUnsupported("the static cache is not allocated yet (prefill first) or not batch 1")
    return keys[0], values[0]


class GlmDecodeStep:
    def __init__(self, model: Any, cache: Any, device: torch.device, backend: str = "auto") -> None:
        cfg = model.config
        rope = dict(getattr(cfg, "rope_parameters", None) or {})
        if rope.get("rope_type", "default") != "default":
            raise FusedDecodeUnsupported(f"rope type {rope.get('rope_type')!r}")
        if getattr(model.model.rotary_emb, "attention_scaling", 1.0) != 1.0:
            raise FusedDecodeUnsupported("scaled rotary embedding")
        self.hq, self.hkv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.d = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.hq
        self.rot = int(self.d * float(rope.get("partial_rotary_factor", 1.0)))
        self.eps = float(cfg.rms_norm_eps)
        self.scale = self.d ** -0.5
        self.inv_freq = model.model.rotary_emb.inv_freq.float().contiguous()
        if self.inv_freq.numel() != self.rot // 2:
            raise FusedDecodeUnsupported("rotary frequencies do not match the head size")
        self.embed = model.model.embed_tokens.weight
        self.final_norm = model.model.norm.weight
        self.lm_head = model.lm_head.weight
        self.layers = [self._layer(layer, i, cache) for i, layer in enumerate(model.model.layers)]
        if backend == "auto":
            backend = "triton" if device.type == "cuda" and triton_available() else "torch"
        self.backend = backend
        dt = self.embed.dtype
        self.res = torch.empty(cfg.hidden_size, dtype=dt, device=device)
        self.normed = torch.empty(cfg.hidden_size, dtype=dt, device=device)
        self.q = torch.empty(self.hq * self.d, dtype=dt, device=device)
        self.attn = torch.empty(self.hq * self.d, dtype=dt, device=device)
        self.act = torch.empty(cfg.intermediate_size, dtype=dt, device=device)
        if backend == "triton":
            from gputui.models import glm_triton

            self._k = glm_triton
            self._attention = glm_triton.DecodeAttention(self.hq, self.hkv, self.d, device)

    def _layer(self, layer: Any, i: int, cache: Any) -> _Layer:
        a, mlp = layer.self_attn, layer.mlp
        qkv = [a.q_proj, a.k_proj, a.v_proj]
        k_cache, v_cache = cache_tensors(cache, i)
        return _Layer(
            ln1=layer.input_layernorm.weight,
            wqkv=joint_rows([m.weight for m in qkv]),
            bqkv=joint_rows([m.bias for m in qkv]) if all(m.bias is not None for m in qkv) else None,
            q_k_v=(a.q_proj, a.k_proj, a.v_proj),
            wo=a.o_proj.weight, ln2=layer.post_attention_layernorm.weight,
            wgu=mlp.gate_up_proj.weight, wd=mlp.down_proj.weight, k_cache=k_cache, v_cache=v_cache,
        )

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits of the token after `ids` ([1, 1]) placed at cache slot `pos` ([1])."""
        self.res.copy_(F.embedding(ids.reshape(1), self.embed).reshape(-1))
        delta: torch.Tensor | None = None
        for lay in self.layers:
            self._norm(delta, lay.ln1)
            qkv = self._qkv(lay)
            self._rope_attend(qkv, lay, pos)
            self._norm(F.linear(self.attn, lay.wo), lay.ln2)
            self._silu_mul(F.linear(self.normed, lay.wgu))
            delta = F.linear(self.act, lay.wd)
        self._norm(delta, self.final_norm)
        return F.linear(self.normed, self.lm_head)

    def _qkv(self, lay: _Layer) -> torch.Tensor:
        if lay.wqkv is not None and (lay.bqkv is not None or lay.q_k_v[0].bias is None):
            return F.linear(self.normed, lay.wqkv, lay.bqkv)
        return torch.cat([m(self.normed) for m in lay.q_k_v])

    # -- the fused ops: Triton kernels, or PyTorch with the reference's roundings ---------

    def _norm(self, delta: torch.Tensor | None, weight: torch.Tensor) -> None:
        if self.backend == "triton":
            self._k.add_rmsnorm(self.res, delta, weight, self.eps, self.normed)
            return
        if delta is not None:
            self.res.copy_(self.res + delta)
        x = self.res.float()
        normed = (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)).to(self.res.dtype)
        self.normed.copy_(weight * normed)

    def _rope_attend(self, qkv: torch.Tensor, lay: _Layer, pos: torch.Tensor) -> None:
        if self.backend == "triton":
            self._k.rope_and_cache(qkv, self.q, lay.k_cache, lay.v_cache, pos, self.inv_freq,
                                   self.hq, self.hkv, self.d, self.rot)
            self._attention(self.q, lay.k_cache, lay.v_cache, pos, self.scale, self.attn)
            return
        p = int(pos.reshape(-1)[0])
        dt = qkv.dtype
        heads = qkv.view(self.hq + 2 * self.hkv, self.d)
        rotated = rotate(heads[: self.hq + self.hkv], p, self.inv_freq, self.rot)
        self.q.copy_(rotated[: self.hq].reshape(-1))
        lay.k_cache[:, p] = rotated[self.hq:]
        lay.v_cache[:, p] = heads[self.hq + self.hkv:]
        group = self.hq // self.hkv
        q = self.q.view(self.hkv, group, self.d)
        k, v = lay.k_cache[:, : p + 1], lay.v_cache[:, : p + 1]
        scores = torch.matmul(q, k.transpose(-1, -2)).float() * self.scale
        out = torch.matmul(torch.softmax(scores, dim=-1).to(dt), v)
        self.attn.copy_(out.reshape(-1))

    def _silu_mul(self, gate_up: torch.Tensor) -> None:
        if self.backend == "triton":
            self._k.silu_mul(gate_up, self.act)
            return
        gate, up = gate_up.chunk(2, dim=-1)
        self.act.copy_(up * F.silu(gate))


def rotate(x: torch.Tensor, pos: int, inv_freq: torch.Tensor, rot: int) -> torch.Tensor:
    """GLM's interleaved partial rotary on [heads, head_dim] at one position."""
    freqs = pos * inv_freq.to(x.device)
    cos = freqs.cos().to(x.dtype).repeat_interleave(2)
    sin = freqs.sin().to(x.dtype).repeat_interleave(2)
    xr, rest = x[:, :rot], x[:, rot:]
    half = torch.stack((-xr[:, 1::2], xr[:, 0::2]), dim=-1).flatten(-2)
    return torch.cat([xr * cos + half * sin, rest], dim=-1)


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means: use the stock path
        return False
    return True


def fused_decode_enabled() -> bool:
    """GPUTUI_FUSED_DECODE=0 keeps transformers' own forward in the decode graph."""
    import os

    return os.environ.get("GPUTUI_FUSED_DECODE", "1") != "0"
