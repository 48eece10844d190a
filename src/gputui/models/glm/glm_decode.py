"""A hand-fused decode step for transformers' GlmForCausalLM (ChatGLM3), batch 1.

Why: after the CUDA graph, a ChatGLM3-6B step on an H100 was ~1,500 kernels, most of them tiny
element-wise ops (RMSNorm alone is six), and the step ran at 50% of the memory roofline.
torch.compile fuses them but costs ~45 s at start. This step does the same fusion by hand, in
six kernels a layer (gemv_triton, glm_triton): the QKV GEMV with the RMSNorm before it and the
bias, rotary and cache write after (ChatGLM3 stores q, k and v as one tensor, so the three
weights are one contiguous block); a split-K attention over only the filled part of the cache
and its combine; the output GEMV adding into the residual; the gate/up GEMV with the RMSNorm
before and SiLU*up after; the down GEMV adding into the residual. Prefill stays on the model's
own forward; both write the same static KV cache.

Two backends with one structure: "triton" (the GPU path) and "torch" (plain PyTorch with the
reference's numerics; used to check the Triton kernels and the weight wiring against
transformers' own forward in tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from gputui.core import env
from gputui.models.glm.gemv_reference import ADD_TO_OUT, SILU_PAIR, STORE, reference
from gputui.models.glm.glm_model import GlmLayer, GlmShape, GlmWeights, joint_rows  # noqa: F401 - joint_rows: tests


class FusedDecodeUnsupported(RuntimeError):
    """The model or cache is not one this step knows how to run (the caller keeps the stock path)."""


@dataclass
class _Layer:
    weights: GlmLayer
    k_cache: torch.Tensor  # [kv_heads, max_len, head_dim], or [slots, kv_heads, max_len, head_dim]
    v_cache: torch.Tensor

    def __getattr__(self, name: str) -> Any:  # the layer's weights by name (ln1, wqkv, ...)
        return getattr(self.__dict__["weights"], name)


def cache_tensors(cache: Any, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    from gputui.models.common.hf import layer_kv

    keys, values = layer_kv(cache, layer)
    if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor) or keys.dim() != 4 \
            or keys.shape[0] != 1:
        raise FusedDecodeUnsupported("the static cache is not allocated yet (prefill first) or not batch 1")
    return keys[0], values[0]


@dataclass
class _Stage:
    """A run of consecutive layers on one device, with that device's working buffers. A model
    on one GPU is one stage; a split model has one per GPU (or per range the scheduler planned)."""

    device: torch.device
    layers: list[_Layer]
    res: torch.Tensor  # the residual stream: the stage's input and output
    qkv: torch.Tensor
    q: torch.Tensor
    attn: torch.Tensor
    act: torch.Tensor
    logits: torch.Tensor | None  # the last stage's output
    attention: Any = None  # glm_triton.DecodeAttention on this device (triton backend)


class GlmDecodeStep:
    """`slot`: for a cache of many slots (glm_model.KVCache), a 1-element device tensor naming
    the stream's; None for a one-slot cache ([kv_heads, max_len, head_dim] per layer)."""

    def __init__(self, weights: GlmWeights, k_caches: list[torch.Tensor], v_caches: list[torch.Tensor],
                 device: torch.device, backend: str = "auto", ranges: list[range] | None = None,
                 slot: torch.Tensor | None = None) -> None:
        """`ranges`: the layers of each stage (a split model); None: all layers, one stage."""
        s = weights.shape
        self.shape = s
        self.hq, self.hkv, self.d, self.rot = s.hq, s.hkv, s.head_dim, s.rot
        self.eps = s.eps
        self.scale = self.d ** -0.5
        self.inv_freq_host = s.inv_freq().contiguous()
        self.slot = slot
        self.embed = weights.embed
        self.final_norm = weights.final_norm
        self.lm_head = weights.lm_head
        self.layers = [_Layer(lay, k, v) for lay, k, v in zip(weights.layers, k_caches, v_caches, strict=True)]
        if backend == "auto":
            backend = "triton" if device.type == "cuda" and triton_available() else "torch"
        self.backend = backend
        self._gemv: Any = reference  # the PyTorch twin of gemv_triton.gemv
        if backend == "triton":
            from gputui.models.glm import glm_triton
            from gputui.models.glm.gemv_triton import gemv

            self._k, self._gemv = glm_triton, gemv
        ranges = ranges or [range(len(self.layers))]
        self.stages = [self._stage(s, self.layers[r.start].ln1.device, [self.layers[i] for i in r]) for r in ranges]
        first, last = self.stages[0].device, self.stages[-1].device
        if self.embed.device != first or self.lm_head.device != last or self.final_norm.device != last:
            raise FusedDecodeUnsupported("the embedding must be with the first layers, the head with the last")
        # the rotary frequencies, on each stage's device
        self.inv_freq = {st.device: self.inv_freq_host.to(st.device) for st in self.stages}

    @classmethod
    def from_hf(cls, model: Any, cache: Any, device: torch.device, backend: str = "auto",
                ranges: list[range] | None = None) -> GlmDecodeStep:
        """Over a transformers GlmForCausalLM and its StaticCache (the fallback runtime, tests)."""
        from gputui.models.glm.glm_model import weights_from_hf

        cfg = model.config
        rope = dict(getattr(cfg, "rope_parameters", None) or {})
        if rope.get("rope_type", "default") != "default":
            raise FusedDecodeUnsupported(f"rope type {rope.get('rope_type')!r}")
        if getattr(model.model.rotary_emb, "attention_scaling", 1.0) != 1.0:
            raise FusedDecodeUnsupported("scaled rotary embedding")
        d = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        shape = GlmShape(hidden=cfg.hidden_size, ffn=cfg.intermediate_size, layers=cfg.num_hidden_layers,
                         hq=cfg.num_attention_heads, hkv=cfg.num_key_value_heads, head_dim=d,
                         rot=int(d * float(rope.get("partial_rotary_factor", 1.0))), eps=float(cfg.rms_norm_eps),
                         theta=float(rope.get("rope_theta", 10000.0)), vocab=cfg.vocab_size,
                         max_positions=cfg.max_position_embeddings, qkv_bias=bool(cfg.attention_bias))
        if not torch.allclose(shape.inv_freq(), model.model.rotary_emb.inv_freq.float().cpu()):
            raise FusedDecodeUnsupported("rotary frequencies do not match the head size")
        kv = [cache_tensors(cache, i) for i in range(shape.layers)]
        return cls(weights_from_hf(model, shape), [k for k, _ in kv], [v for _, v in kv], device, backend, ranges)

    def _stage(self, s: GlmShape, device: torch.device, layers: list[_Layer]) -> _Stage:
        for lay in layers:
            if lay.wo.device != device or lay.k_cache.device != device:
                raise FusedDecodeUnsupported("a stage's layers and their cache must be on one device")
        dt = self.embed.dtype

        def buf(n: int) -> torch.Tensor:
            return torch.empty(n, dtype=dt, device=device)

        last = layers[-1] is self.layers[-1]
        st = _Stage(device, layers, buf(s.hidden), buf(s.qkv_rows),
                    buf(self.hq * self.d), buf(self.hq * self.d), buf(s.ffn),
                    buf(self.lm_head.shape[0]) if last else None)
        if self.backend == "triton":
            st.attention = self._k.DecodeAttention(self.hq, self.hkv, self.d, device)
        return st

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits of the token after `ids` ([1, 1]) placed at cache slot `pos` ([1]).
        A split model runs stage by stage, handing the residual stream on."""
        if len(self.stages) == 1:
            out = self.run_stage(0, ids, pos)
            assert out is not None
            return out
        out = None
        for k, st in enumerate(self.stages):
            if k:
                st.res.copy_(self.stages[k - 1].res)
            with _on(st.device):
                # the PyTorch twin reads the position as a Python number, wherever it is
                out = self.run_stage(k, ids.to(st.device), pos if self.backend == "torch" else pos.to(st.device))
        assert out is not None
        return out

    @torch.inference_mode()
    def run_stage(self, k: int, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor | None:
        """Stage k alone, on its own device: the first embeds `ids`, the others start from
        their `res`; the last returns the logits, the others leave the full residual in `res`."""
        st = self.stages[k]
        if k == 0:
            st.res.copy_(F.embedding(ids.reshape(1), self.embed).reshape(-1))
        for lay in st.layers:
            self._qkv_rope(st, lay, pos)  # q to st.q; k and v into the cache at pos
            self._attend(st, lay, pos)
            self._linear(st.attn, lay.wo, st.res, epilogue=ADD_TO_OUT)  # res += o_proj(attn)
            self._linear(st.res, lay.wgu, st.act, norm=lay.ln2, epilogue=SILU_PAIR)
            self._linear(st.act, lay.wd, st.res, epilogue=ADD_TO_OUT)  # res += down_proj(act)
        if k < len(self.stages) - 1:
            return None  # the full residual is in res, for the next stage
        assert st.logits is not None
        return self._linear(st.res, self.lm_head, st.logits, norm=self.final_norm)

    def _qkv_rope(self, st: _Stage, lay: _Layer, pos: torch.Tensor) -> None:
        inv_freq = self.inv_freq[st.device]
        if self.backend == "triton":  # one kernel: norm, GEMV, bias, rotary, cache write
            from gputui.models.glm.gemv_triton import RopeCache

            rope = RopeCache(lay.k_cache, lay.v_cache, pos, inv_freq, self.hq, self.hkv, self.d, self.rot, self.slot)
            self._gemv(lay.wqkv, st.res, st.q, bias=lay.bqkv, norm=(lay.ln1, self.eps), rope=rope)
            return
        qkv = self._linear(st.res, lay.wqkv, st.qkv, bias=lay.bqkv, norm=lay.ln1)
        p = int(pos.reshape(-1)[0])
        heads = qkv.view(self.hq + 2 * self.hkv, self.d)
        rotated = rotate(heads[: self.hq + self.hkv], p, inv_freq, self.rot)
        st.q.copy_(rotated[: self.hq].reshape(-1))
        k_cache, v_cache = self._slot_caches(lay)
        k_cache[:, p] = rotated[self.hq:]
        v_cache[:, p] = heads[self.hq + self.hkv:]

    def _slot_caches(self, lay: _Layer) -> tuple[torch.Tensor, torch.Tensor]:
        """The PyTorch twin's view of this stream's cache (it reads the slot on the host)."""
        if self.slot is None:
            return lay.k_cache, lay.v_cache
        s = int(self.slot.reshape(-1)[0])
        return lay.k_cache[s], lay.v_cache[s]

    # -- the fused ops: Triton kernels, or PyTorch with the reference's roundings ---------

    def _linear(self, x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, *, bias: torch.Tensor | None = None,
                norm: torch.Tensor | None = None, epilogue: int = STORE) -> torch.Tensor:
        """out <- W @ x (see gemv_triton.gemv): normed first when `norm` is an RMSNorm weight;
        stored, added to `out`, or passed through SiLU*up, as `epilogue` says."""
        return self._gemv(w, x, out, bias=bias, norm=(norm, self.eps) if norm is not None else None, epilogue=epilogue)

    def _attend(self, st: _Stage, lay: _Layer, pos: torch.Tensor) -> None:
        if self.backend == "triton":
            st.attention(st.q, lay.k_cache, lay.v_cache, pos, self.scale, st.attn, self.slot)
            return
        p = int(pos.reshape(-1)[0])
        group = self.hq // self.hkv
        q = st.q.view(self.hkv, group, self.d)
        k_cache, v_cache = self._slot_caches(lay)
        k, v = k_cache[:, : p + 1], v_cache[:, : p + 1]
        scores = torch.matmul(q, k.transpose(-1, -2)).float() * self.scale
        out = torch.matmul(torch.softmax(scores, dim=-1).to(q.dtype), v)
        st.attn.copy_(out.reshape(-1))


def _on(device: torch.device) -> Any:
    """Kernels (Triton's too) launch on the current CUDA device: make it this stage's."""
    import contextlib

    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


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

    return env.switched_on("GPUTUI_FUSED_DECODE")
