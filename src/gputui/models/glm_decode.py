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
from gputui.models.gemv_reference import ADD_TO_OUT, SILU_PAIR, STORE, reference, rms_norm


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
    from gputui.models.hf import layer_kv

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
    def __init__(self, model: Any, cache: Any, device: torch.device, backend: str = "auto",
                 ranges: list[range] | None = None) -> None:
        """`ranges`: the layers of each stage (a split model); None: all layers, one stage."""
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
        self.inv_freq_host = model.model.rotary_emb.inv_freq.float().contiguous()
        if self.inv_freq_host.numel() != self.rot // 2:
            raise FusedDecodeUnsupported("rotary frequencies do not match the head size")
        self.embed = model.model.embed_tokens.weight
        self.final_norm = model.model.norm.weight
        self.lm_head = model.lm_head.weight
        self.layers = [self._layer(layer, i, cache) for i, layer in enumerate(model.model.layers)]
        if backend == "auto":
            backend = "triton" if device.type == "cuda" and triton_available() else "torch"
        self.backend = backend
        self._gemv: Any = reference  # the PyTorch twin of gemv_triton.gemv
        if backend == "triton":
            from gputui.models import glm_triton
            from gputui.models.gemv_triton import gemv

            self._k, self._gemv = glm_triton, gemv
            if any(lay.wqkv is None or (lay.bqkv is None and lay.q_k_v[0].bias is not None) for lay in self.layers):
                raise FusedDecodeUnsupported("q, k and v are not one block in memory")
        ranges = ranges or [range(len(self.layers))]
        self.stages = [self._stage(cfg, model.model.layers[r.start].input_layernorm.weight.device,
                                   [self.layers[i] for i in r]) for r in ranges]
        first, last = self.stages[0].device, self.stages[-1].device
        if self.embed.device != first or self.lm_head.device != last or self.final_norm.device != last:
            raise FusedDecodeUnsupported("the embedding must be with the first layers, the head with the last")
        # the rotary frequencies, on each stage's device
        self.inv_freq = {st.device: self.inv_freq_host.to(st.device) for st in self.stages}

    def _stage(self, cfg: Any, device: torch.device, layers: list[_Layer]) -> _Stage:
        for lay in layers:
            if lay.wo.device != device or lay.k_cache.device != device:
                raise FusedDecodeUnsupported("a stage's layers and their cache must be on one device")
        dt = self.embed.dtype

        def buf(n: int) -> torch.Tensor:
            return torch.empty(n, dtype=dt, device=device)

        last = layers[-1] is self.layers[-1]
        st = _Stage(device, layers, buf(cfg.hidden_size), buf((self.hq + 2 * self.hkv) * self.d),
                    buf(self.hq * self.d), buf(self.hq * self.d), buf(cfg.intermediate_size),
                    buf(self.lm_head.shape[0]) if last else None)
        if self.backend == "triton":
            st.attention = self._k.DecodeAttention(self.hq, self.hkv, self.d, device)
        return st

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
            from gputui.models.gemv_triton import RopeCache

            assert lay.wqkv is not None  # checked in __init__
            rope = RopeCache(lay.k_cache, lay.v_cache, pos, inv_freq, self.hq, self.hkv, self.d, self.rot)
            self._gemv(lay.wqkv, st.res, st.q, bias=lay.bqkv, norm=(lay.ln1, self.eps), rope=rope)
            return
        if lay.wqkv is not None and (lay.bqkv is not None or lay.q_k_v[0].bias is None):
            qkv = self._linear(st.res, lay.wqkv, st.qkv, bias=lay.bqkv, norm=lay.ln1)
        else:  # q, k and v apart in memory (never so for a ChatGLM3 checkpoint): three matmuls
            normed = rms_norm(st.res, lay.ln1, self.eps)
            qkv = torch.cat([m(normed) for m in lay.q_k_v])
        p = int(pos.reshape(-1)[0])
        heads = qkv.view(self.hq + 2 * self.hkv, self.d)
        rotated = rotate(heads[: self.hq + self.hkv], p, inv_freq, self.rot)
        st.q.copy_(rotated[: self.hq].reshape(-1))
        lay.k_cache[:, p] = rotated[self.hq:]
        lay.v_cache[:, p] = heads[self.hq + self.hkv:]

    # -- the fused ops: Triton kernels, or PyTorch with the reference's roundings ---------

    def _linear(self, x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, *, bias: torch.Tensor | None = None,
                norm: torch.Tensor | None = None, epilogue: int = STORE) -> torch.Tensor:
        """out <- W @ x (see gemv_triton.gemv): normed first when `norm` is an RMSNorm weight;
        stored, added to `out`, or passed through SiLU*up, as `epilogue` says."""
        return self._gemv(w, x, out, bias=bias, norm=(norm, self.eps) if norm is not None else None, epilogue=epilogue)

    def _attend(self, st: _Stage, lay: _Layer, pos: torch.Tensor) -> None:
        if self.backend == "triton":
            st.attention(st.q, lay.k_cache, lay.v_cache, pos, self.scale, st.attn)
            return
        p = int(pos.reshape(-1)[0])
        group = self.hq // self.hkv
        q = st.q.view(self.hkv, group, self.d)
        k, v = lay.k_cache[:, : p + 1], lay.v_cache[:, : p + 1]
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
