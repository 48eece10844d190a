"""ChatGLM3 as gputui's own model: its weights, a KV cache of many slots, and the two forwards
(a prompt's prefill, and one decode step for many streams at once) in plain PyTorch.

Why our own and not transformers' GlmForCausalLM: `from transformers import GlmForCausalLM`
alone took 10.9 s of a 15 s cold launch on the H200 machine (issue 27), and the fused decode
already computed every layer itself; only the prefill and the module tree came from there. A
continuous batch also wants a cache with one slot per stream and a step whose rows sit at
different positions, which transformers' StaticCache does not have. transformers' model stays
the reference in tests (tests/unit/test_glm_model.py: same logits) and the fallback runtime
(GPUTUI_GLM_RUNTIME=transformers).

Numerics follow transformers' GLM code: storage dtype tensors, fp32 statistics in RMSNorm and
softmax, rounding where it rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gputui.core import env
from gputui.core.checkpoint_info import CheckpointError, read_config, weight_files
from gputui.core.kinds import check_kind, kind_named
from gputui.models.common.weights import iter_tensors, to_device, validate
from gputui.models.glm.gemv_reference import rms_norm


@dataclass(frozen=True)
class GlmShape:
    hidden: int
    ffn: int
    layers: int
    hq: int
    hkv: int
    head_dim: int
    rot: int  # rotated dimensions per head (ChatGLM3: half of them)
    eps: float
    theta: float
    vocab: int
    max_positions: int
    qkv_bias: bool
    # rotary pairs: ChatGLM3's interleave (2i, 2i+1) over the first `rot` dimensions; Llama's
    # family ("neox", rotate_half) pairs i with i + rot/2
    neox: bool = False

    @classmethod
    def from_chatglm(cls, cfg: dict[str, Any]) -> GlmShape:
        """ChatGLM3's config.json (fields as in chatglm3-format.md); rope_ratio scales theta."""
        heads = int(cfg["num_attention_heads"])
        d = int(cfg.get("kv_channels", cfg["hidden_size"] // heads))
        kv = int(cfg.get("multi_query_group_num", heads)) if cfg.get("multi_query_attention") else heads
        return cls(hidden=int(cfg["hidden_size"]), ffn=int(cfg["ffn_hidden_size"]), layers=int(cfg["num_layers"]),
                   hq=heads, hkv=kv, head_dim=d, rot=d // 2, eps=float(cfg.get("layernorm_epsilon", 1e-5)),
                   theta=10000.0 * float(cfg.get("rope_ratio", 1.0)), vocab=int(cfg["padded_vocab_size"]),
                   max_positions=int(cfg.get("seq_length", 8192)), qkv_bias=bool(cfg.get("add_qkv_bias", True)))

    @property
    def qkv_rows(self) -> int:
        return (self.hq + 2 * self.hkv) * self.head_dim

    def inv_freq(self) -> torch.Tensor:
        """The rotary frequencies, fp32, as transformers computes them (rot // 2 entries)."""
        return 1.0 / (self.theta ** (torch.arange(0, self.rot, 2, dtype=torch.int64).float() / self.rot))


@dataclass(frozen=True)
class RowBlocks:
    """One weight matrix (or bias) kept as its row blocks where they lie apart in memory: a
    Llama-family checkpoint's q, k and v, its gate and up. Joining them would copy ~9 GB for
    Llama-3-8B, memory the preflight does not count; a projection runs one GEMM per block
    instead, into one output."""

    parts: tuple[torch.Tensor, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return (sum(p.shape[0] for p in self.parts), *self.parts[0].shape[1:])

    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parts)


Weight = torch.Tensor | RowBlocks


def linear(x: torch.Tensor, w: Weight, b: Weight | None = None) -> torch.Tensor:
    """F.linear over a matrix or its row blocks (RowBlocks: the blocks' outputs side by side)."""
    if isinstance(w, torch.Tensor):
        assert not isinstance(b, RowBlocks)
        return F.linear(x, w, b)
    biases = b.parts if isinstance(b, RowBlocks) else (None,) * len(w.parts)
    if x.shape[0] == 1:  # one row: each GEMM writes its slice of one output (no concatenation)
        out = torch.empty(1, w.shape[0], dtype=x.dtype, device=x.device)
        at = 0
        for part, bias in zip(w.parts, biases, strict=True):
            n = part.shape[0]
            if bias is None:
                torch.mm(x, part.t(), out=out[:, at:at + n])
            else:
                torch.addmm(bias, x, part.t(), out=out[:, at:at + n])
            at += n
        return out
    return torch.cat([F.linear(x, part, bias) for part, bias in zip(w.parts, biases, strict=True)], dim=-1)


def gate_and_up(x: torch.Tensor, w: Weight) -> tuple[torch.Tensor, torch.Tensor]:
    """The MLP's gate and up projections: halves of one GEMM's output, or each block's own GEMM
    (never joined: a joined copy of a prefill chunk's is memory the preflight does not count)."""
    if isinstance(w, RowBlocks):
        gate, up = (F.linear(x, part) for part in w.parts)
        return gate, up
    gate, up = F.linear(x, w).chunk(2, dim=-1)
    return gate, up


@dataclass
class GlmLayer:
    ln1: torch.Tensor
    wqkv: Weight  # q, k and v rows (one block, as ChatGLM3 stores them; apart for Llama's family)
    bqkv: Weight | None
    wo: torch.Tensor
    ln2: torch.Tensor
    wgu: Weight  # the gate rows, then the up rows
    wd: torch.Tensor


@dataclass
class GlmWeights:
    shape: GlmShape
    embed: torch.Tensor
    layers: list[GlmLayer]
    final_norm: torch.Tensor
    lm_head: torch.Tensor

    @property
    def device(self) -> torch.device:
        return self.embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype

    def nbytes(self) -> int:
        tensors: list[Weight] = [self.embed, self.final_norm]
        if self.lm_head.data_ptr() != self.embed.data_ptr():  # a tied head is the embedding
            tensors.append(self.lm_head)
        for lay in self.layers:
            tensors += [t for t in vars(lay).values() if t is not None]
        return sum(t.nbytes() if isinstance(t, RowBlocks) else t.numel() * t.element_size() for t in tensors)


# ChatGLM3's tensor names -> (field, per layer)
_LAYER_FIELDS = {
    "input_layernorm.weight": "ln1", "self_attention.query_key_value.weight": "wqkv",
    "self_attention.query_key_value.bias": "bqkv", "self_attention.dense.weight": "wo",
    "post_attention_layernorm.weight": "ln2", "mlp.dense_h_to_4h.weight": "wgu", "mlp.dense_4h_to_h.weight": "wd",
}
_TOP_FIELDS = {"transformer.embedding.word_embeddings.weight": "embed",
               "transformer.encoder.final_layernorm.weight": "final_norm",
               "transformer.output_layer.weight": "lm_head"}
_LAYER_PREFIX = "transformer.encoder.layers."


def assemble(shape: GlmShape, tensors: Iterable[tuple[str, torch.Tensor]], where: str) -> GlmWeights:
    """The weights from (ChatGLM3 name, tensor) pairs, every shape checked against the config."""
    top: dict[str, torch.Tensor] = {}
    per_layer: list[dict[str, torch.Tensor]] = [{} for _ in range(shape.layers)]
    for name, t in tensors:
        if name.endswith("rotary_pos_emb.inv_freq"):
            continue  # recomputed from the config
        if name in _TOP_FIELDS:
            top[_TOP_FIELDS[name]] = t
            continue
        layer, _, rest = name.removeprefix(_LAYER_PREFIX).partition(".")
        if not name.startswith(_LAYER_PREFIX) or rest not in _LAYER_FIELDS or not layer.isdigit() \
                or int(layer) >= shape.layers:
            raise CheckpointError(f"unexpected tensor {name!r} in a ChatGLM3 checkpoint")
        per_layer[int(layer)][_LAYER_FIELDS[rest]] = t
    h, s = shape.hidden, shape
    want = {"embed": (s.vocab, h), "final_norm": (h,), "lm_head": (s.vocab, h), "ln1": (h,), "ln2": (h,),
            "wqkv": (s.qkv_rows, h), "bqkv": (s.qkv_rows,), "wo": (h, s.hq * s.head_dim),
            "wgu": (2 * s.ffn, h), "wd": (h, s.ffn)}
    needed = ["ln1", "wqkv", "wo", "ln2", "wgu", "wd"] + (["bqkv"] if s.qkv_bias else [])
    missing = [k for k in ("embed", "final_norm", "lm_head") if k not in top]
    missing += [f"layer {i} {k}" for i, d in enumerate(per_layer) for k in needed if k not in d]
    if missing:
        raise CheckpointError(f"{where}: missing weights {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    for i, d in enumerate([top, *per_layer]):
        for k, t in d.items():
            if tuple(t.shape) != want[k]:
                raise CheckpointError(f"{where}: {k}{'' if i == 0 else f' of layer {i - 1}'} has shape "
                                      f"{list(t.shape)}, the config says {list(want[k])}")
    layers = [GlmLayer(d["ln1"], d["wqkv"], d.get("bqkv"), d["wo"], d["ln2"], d["wgu"], d["wd"]) for d in per_layer]
    return GlmWeights(shape, top["embed"], layers, top["final_norm"], top["lm_head"])


def load_glm(path: str | Path, device: torch.device, dtype: torch.dtype,
             timings: dict[str, float] | None = None) -> GlmWeights:
    """A ChatGLM3 checkpoint folder's weights on one device, with no transformers import: straight
    from the safetensors shards to the device (fast_load) on a GPU, tensor by tensor otherwise."""
    p = Path(path)
    cfg = check_kind(kind_named("chatglm3"), p)  # the scheduler's preflight checks, again
    fmt = validate(p)
    if device.type == "cuda" and fmt == "safetensors" and env.switched_on("GPUTUI_FAST_LOAD"):
        from gputui.models.common.fast_load import read_tensors

        raw: Iterable[tuple[str, torch.Tensor]] = read_tensors(weight_files(p)[1], device, timings)
    else:
        raw = iter_tensors(p)
    return assemble(GlmShape.from_chatglm(cfg), ((n, to_device(t, device, dtype)) for n, t in raw), str(p))


def shape_of(path: str | Path) -> GlmShape:
    return GlmShape.from_chatglm(read_config(Path(path)))


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


def weights_from_hf(model: Any, shape: GlmShape) -> GlmWeights:
    """The same tensors as a loaded GlmForCausalLM (tests: one set of weights, both models).
    q, k and v must be row views of one block, as load_chatglm3 leaves them."""
    layers = []
    for lay in model.model.layers:
        a = lay.self_attn
        wqkv = joint_rows([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
        if wqkv is None:
            wqkv = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
        bqkv = None
        if a.q_proj.bias is not None:
            bqkv = joint_rows([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
            if bqkv is None:
                bqkv = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
        layers.append(GlmLayer(lay.input_layernorm.weight, wqkv, bqkv, a.o_proj.weight,
                               lay.post_attention_layernorm.weight, lay.mlp.gate_up_proj.weight,
                               lay.mlp.down_proj.weight))
    return GlmWeights(shape, model.model.embed_tokens.weight, layers, model.model.norm.weight, model.lm_head.weight)


class KVCache:
    """Keys and values of `slots` streams plus one scratch slot (the last: padding rows of a
    batch write there), each `max_len` positions: per layer [slots + 1, kv_heads, max_len, head_dim].
    Allocated once at warm-up - the memory the preflight counted - so a GPU filled by others
    later cannot starve a stream."""

    def __init__(self, shape: GlmShape, slots: int, max_len: int, device: torch.device, dtype: torch.dtype,
                 scratch: bool = True) -> None:
        self.slots, self.max_len = slots, max_len
        # scratch=False: one stream that never has padding rows, and exactly the preflight's KV
        size = (shape.layers, 2, slots + (1 if scratch else 0), shape.hkv, max_len, shape.head_dim)
        self.data = torch.zeros(size, dtype=dtype, device=device)
        self.k = [self.data[i, 0] for i in range(shape.layers)]
        self.v = [self.data[i, 1] for i in range(shape.layers)]

    @property
    def scratch(self) -> int:
        return self.slots

    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()


def rope_tables(shape: GlmShape, inv_freq: torch.Tensor, pos: torch.Tensor, dtype: torch.dtype
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ([n, rot], laid out as the shape pairs dimensions) at positions `pos` ([n]):
    fp32, then the dtype."""
    freqs = pos.float()[:, None] * inv_freq[None, :]
    cos, sin = freqs.cos().to(dtype), freqs.sin().to(dtype)
    if shape.neox:
        return torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
    return cos.repeat_interleave(2, -1), sin.repeat_interleave(2, -1)


def rotate_heads(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rot: int, neox: bool = False) -> torch.Tensor:
    """The rotary on [n, heads, head_dim] with [n, rot] tables: GLM's interleaved pairs over the
    first `rot` dimensions, or (neox) Llama's rotate_half."""
    xr, rest = x[..., :rot], x[..., rot:]
    if neox:
        half = torch.cat((-xr[..., rot // 2:], xr[..., : rot // 2]), dim=-1)
    else:
        half = torch.stack((-xr[..., 1::2], xr[..., 0::2]), dim=-1).flatten(-2)
    return torch.cat([xr * cos[:, None] + half * sin[:, None], rest], dim=-1)


@dataclass
class Segment:
    """One prompt's chunk for prefill_many: tokens `ids` ([T], on the device) at positions
    start.. of `slot`; `logits`: return the logits after its last token."""

    slot: int
    ids: torch.Tensor
    start: int
    logits: bool = True


Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class TorchRowOps:
    """The step's work between its matmuls, for M rows, in plain PyTorch (the CPU, the reference
    of glm_triton.TritonRowOps): RMSNorm; rotary on q and k with each row's position, k and v
    into each row's slot, q out; SiLU(gate) * up."""

    def __init__(self, shape: GlmShape, inv_freq: torch.Tensor) -> None:
        self.s, self.inv_freq = shape, inv_freq

    def norm(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, w, self.s.eps)

    def rope_cache(self, qkv: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, slots: torch.Tensor,
                   pos: torch.Tensor) -> torch.Tensor:
        s = self.s
        heads = qkv.view(qkv.shape[0], s.hq + 2 * s.hkv, s.head_dim)
        cos, sin = rope_tables(s, self.inv_freq, pos, qkv.dtype)
        qk = rotate_heads(heads[:, : s.hq + s.hkv], cos, sin, s.rot, s.neox)
        kc[slots, :, pos] = qk[:, s.hq:]
        vc[slots, :, pos] = heads[:, s.hq + s.hkv:]
        return qk[:, : s.hq]

    def silu_mul(self, gu: torch.Tensor) -> torch.Tensor:
        gate, up = gu.chunk(2, dim=-1)
        return up * F.silu(gate)


class GlmModel:
    """The forwards over GlmWeights and a KVCache. `attend` is the decode attention of the
    batch (query rows [M, hq, head_dim], one layer's keys and values, slots [M], positions [M])
    -> [M, hq * head_dim]: the loop below on the CPU, the Triton kernel on a GPU."""

    def __init__(self, weights: GlmWeights, cache: KVCache, attend: Attend | None = None, ops: Any = None,
                 inv_freq: torch.Tensor | None = None) -> None:
        self.w, self.cache = weights, cache
        self.s = weights.shape
        # the checkpoint's own rotary frequencies where its config scales them (Llama 3's)
        self.inv_freq = (inv_freq if inv_freq is not None else self.s.inv_freq()).to(weights.device)
        self.scale = self.s.head_dim ** -0.5
        self.attend = attend or self.attend_rows
        self.ops = ops or TorchRowOps(self.s, self.inv_freq)

    def prefill(self, slot: int, ids: torch.Tensor, start: int, logits: bool = True) -> torch.Tensor | None:
        """Prompt tokens `ids` ([T], on the device) at positions start.. of `slot`: their keys and
        values into the cache, and the logits after the last one (fp32 [vocab]) when asked."""
        return self.prefill_many([Segment(slot, ids, start, logits)])[0]

    @torch.inference_mode()
    def prefill_many(self, segments: list[Segment]) -> list[torch.Tensor | None]:
        """Several prompts' chunks in one forward: their tokens share each read of the weights
        (16 short prompts arriving together took 16 forwards, one per step, before), each attends
        over its own slot. Returns each segment's last logits (fp32 [vocab]) or None."""
        s, w = self.s, self.w
        for seg in segments:
            if seg.start + seg.ids.shape[0] > self.cache.max_len:
                raise ValueError(f"prefill to position {seg.start + seg.ids.shape[0]}, "
                                 f"past the cache's {self.cache.max_len}")
        dev = segments[0].ids.device
        ids = torch.cat([seg.ids for seg in segments])
        n = ids.shape[0]
        pos = torch.cat([torch.arange(seg.start, seg.start + seg.ids.shape[0], device=dev) for seg in segments])
        offsets = [0]
        for seg in segments:
            offsets.append(offsets[-1] + seg.ids.shape[0])
        x = F.embedding(ids, w.embed)
        cos, sin = rope_tables(s, self.inv_freq, pos, w.dtype)
        # New prompts only (every segment from position 0), the common case when requests arrive
        # together: one cache write and one attention call a layer for all of them, the
        # attention masked to each prompt's own causal block. (Per segment, 8 short prompts
        # took ~90 ms of launches on the H200 before their first tokens.)
        fresh = all(seg.start == 0 for seg in segments)
        if fresh:
            slot_of = torch.cat([torch.full((b - a,), seg.slot, device=dev)
                                 for seg, a, b in zip(segments, offsets, offsets[1:], strict=False)])
            which = torch.repeat_interleave(torch.arange(len(segments), device=dev),
                                            torch.tensor([seg.ids.shape[0] for seg in segments], device=dev))
            block = (which[:, None] == which[None, :]) & (pos[None, :] <= pos[:, None])
        group = s.hq // s.hkv
        for lay, kc, vc in zip(w.layers, self.cache.k, self.cache.v, strict=True):
            qkv = linear(rms_norm(x, lay.ln1, s.eps), lay.wqkv, lay.bqkv).view(n, s.hq + 2 * s.hkv, s.head_dim)
            qk = rotate_heads(qkv[:, : s.hq + s.hkv], cos, sin, s.rot, s.neox)
            if fresh:
                kc[slot_of, :, pos] = qk[:, s.hq:]
                vc[slot_of, :, pos] = qkv[:, s.hq + s.hkv:]
                q = qk[:, : s.hq].transpose(0, 1)[None]
                keys = qk[:, s.hq:].transpose(0, 1).repeat_interleave(group, dim=0)[None]
                values = qkv[:, s.hq + s.hkv:].transpose(0, 1).repeat_interleave(group, dim=0)[None]
                mask = None if len(segments) == 1 else block
                att = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=mask is None,
                                                     scale=self.scale)
                a_all = att[0].transpose(0, 1).reshape(n, -1)
            else:
                a_all = self._attend_segments(segments, offsets, qk, qkv, kc, vc)
            x = x + F.linear(a_all, lay.wo)
            gate, up = gate_and_up(rms_norm(x, lay.ln2, s.eps), lay.wgu)
            # in place: a 2048-token chunk's gate is 117 MB for Llama-3-8B (the preflight
            # counts transformers' peak; a copy per step of this line went over it by 300 MB)
            x = x + F.linear(F.silu(gate, inplace=True).mul_(up), lay.wd)
        want = [b - 1 for seg, b in zip(segments, offsets[1:], strict=True) if seg.logits]
        if not want:
            return [None] * len(segments)
        last = F.linear(rms_norm(x[want], w.final_norm, s.eps), w.lm_head).float()
        rows = iter(last)
        return [next(rows) if seg.logits else None for seg in segments]

    def _attend_segments(self, segments: list[Segment], offsets: list[int], qk: torch.Tensor, qkv: torch.Tensor,
                         kc: torch.Tensor, vc: torch.Tensor) -> torch.Tensor:
        """Each segment's keys and values into its slot, and its queries over that slot's
        positions so far (a continued chunk sees the chunks before it)."""
        s = self.s
        group = s.hq // s.hkv
        outs = []
        for seg, a, b in zip(segments, offsets, offsets[1:], strict=False):
            end = seg.start + b - a
            kc[seg.slot, :, seg.start:end] = qk[a:b, s.hq:].transpose(0, 1)
            vc[seg.slot, :, seg.start:end] = qkv[a:b, s.hq + s.hkv:].transpose(0, 1)
            dev = qk.device
            # query i (position start+i) sees keys 0..start+i; only a first chunk is plain causal
            mask = None if seg.start == 0 else (torch.arange(end, device=dev)[None, :]
                                                <= torch.arange(seg.start, end, device=dev)[:, None])
            # each KV head repeated for its query heads, as transformers' prefill does: SDPA's
            # grouped-query mode falls back to the math kernel with a mask (scores for the whole
            # context in memory), while the repeat costs 2 x 134 MB at 8k for ChatGLM3-6B
            keys = kc[seg.slot, :, :end].repeat_interleave(group, dim=0)[None]
            values = vc[seg.slot, :, :end].repeat_interleave(group, dim=0)[None]
            q = qk[a:b, : s.hq].transpose(0, 1)[None]  # [1, hq, n, d]
            att = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=mask is None,
                                                 scale=self.scale)
            outs.append(att[0].transpose(0, 1).reshape(b - a, -1))
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    @torch.inference_mode()
    def decode(self, ids: torch.Tensor, slots: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """One new token for each of M streams: `ids`, `slots`, `pos` are [M] device tensors
        (row i's token goes to position pos[i] of slot slots[i]). Returns the logits [M, vocab]
        in the storage dtype. The weights are read once for all rows. Shapes do not depend on
        the positions, so the step can be captured as a CUDA graph."""
        w, ops = self.w, self.ops
        x = F.embedding(ids, w.embed)
        for lay, kc, vc in zip(w.layers, self.cache.k, self.cache.v, strict=True):
            qkv = linear(ops.norm(x, lay.ln1), lay.wqkv, lay.bqkv)
            q = ops.rope_cache(qkv, kc, vc, slots, pos)
            a = self.attend(q, kc, vc, slots, pos)
            x = torch.addmm(x, a, lay.wo.t())  # the residual added by the GEMM itself
            act = ops.silu_mul(linear(ops.norm(x, lay.ln2), lay.wgu))
            x = torch.addmm(x, act, lay.wd.t())
        return F.linear(ops.norm(x, w.final_norm), w.lm_head)

    def attend_rows(self, q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, slots: torch.Tensor,
                    pos: torch.Tensor) -> torch.Tensor:
        """Each row over its own slot's first pos+1 keys (reads positions on the host: not for
        a CUDA graph)."""
        s = self.s
        group = s.hq // s.hkv
        out = []
        for i, (slot, p) in enumerate(zip(slots.tolist(), pos.tolist(), strict=True)):
            k, v = kc[slot, :, : p + 1], vc[slot, :, : p + 1]
            qi = q[i].reshape(s.hkv, group, s.head_dim)
            scores = torch.matmul(qi, k.transpose(-1, -2)).float() * self.scale
            out.append(torch.matmul(torch.softmax(scores, dim=-1).to(q.dtype), v).reshape(-1))
        return torch.stack(out)
