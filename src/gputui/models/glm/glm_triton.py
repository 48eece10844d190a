"""Triton kernels for the fused GLM decode step (one new token per stream), besides the GEMVs
(gemv_triton, which also rotate q and k and write the cache): split-K attention, each row of a
batch over its own cache slot.

Each kernel replaces a run of small PyTorch ops whose launches cost more than their work at
batch 1. Numerics follow transformers' GLM code: bf16 storage, fp32 math, rounding to the
storage dtype where the reference rounds. glm_decode's "torch" backend is the PyTorch twin of
every kernel; tests compare the two (on the CPU through Triton's interpreter).
"""

from __future__ import annotations

import threading
from typing import Any

import torch
import triton
import triton.language as tl

from gputui.models.glm.gemv_triton import precompile_jobs
from gputui.models.glm.glm_model import GlmShape


@triton.jit
def _attn_split_kernel(q_ptr, k_ptr, v_ptr, pos_ptr, slot_ptr, acc_ptr, m_ptr, l_ptr, stride_q,
                       stride_kslot, stride_kh, stride_ks, stride_vslot, stride_vh, stride_vs, scale,
                       HKV: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, D: tl.constexpr,
                       BLOCK_N: tl.constexpr, NSPLIT: tl.constexpr):
    kh = tl.program_id(0)
    split = tl.program_id(1)
    row = tl.program_id(2)  # one query token per row of the batch, each over its own slot
    n_ctx = tl.load(pos_ptr + row).to(tl.int32) + 1
    slot = tl.load(slot_ptr + row).to(tl.int64)
    k_ptr += slot * stride_kslot
    v_ptr += slot * stride_vslot
    per_split = tl.cdiv(tl.cdiv(n_ctx, NSPLIT), BLOCK_N) * BLOCK_N
    start = split * per_split
    end = tl.minimum(start + per_split, n_ctx)
    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, D)
    gmask = g < GROUP
    q = tl.load(q_ptr + row * stride_q + (kh * GROUP + g)[:, None] * D + d[None, :], mask=gmask[:, None],
                other=0.0)
    m = tl.full((GROUP_PAD,), float("-inf"), tl.float32)
    lsum = tl.zeros((GROUP_PAD,), tl.float32)
    acc = tl.zeros((GROUP_PAD, D), tl.float32)
    for s0 in range(start, end, BLOCK_N):
        n = s0 + tl.arange(0, BLOCK_N)
        nmask = n < end
        k = tl.load(k_ptr + kh * stride_kh + n[:, None] * stride_ks + d[None, :], mask=nmask[:, None], other=0.0)
        qk = tl.dot(q, tl.trans(k)) * scale
        qk = tl.where(nmask[None, :], qk, float("-inf"))
        m_new = tl.maximum(m, tl.max(qk, axis=1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(qk - m_new[:, None])
        lsum = lsum * alpha + tl.sum(p, axis=1)
        v = tl.load(v_ptr + kh * stride_vh + n[:, None] * stride_vs + d[None, :], mask=nmask[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new
    base = ((row * HKV + kh) * NSPLIT + split) * GROUP_PAD
    tl.store(acc_ptr + (base + g)[:, None] * D + d[None, :], acc)
    tl.store(m_ptr + base + g, m)
    tl.store(l_ptr + base + g, lsum)


@triton.jit
def _attn_combine_kernel(acc_ptr, m_ptr, l_ptr, out_ptr, stride_out, HKV: tl.constexpr, GROUP: tl.constexpr,
                         GROUP_PAD: tl.constexpr, D: tl.constexpr, NSPLIT: tl.constexpr):
    h = tl.program_id(0)
    row = tl.program_id(1)
    kh = h // GROUP
    g = h % GROUP
    sp = tl.arange(0, NSPLIT)
    d = tl.arange(0, D)
    rows = ((row * HKV + kh) * NSPLIT + sp) * GROUP_PAD + g
    m = tl.load(m_ptr + rows)
    lsum = tl.load(l_ptr + rows)
    m_max = tl.max(m, axis=0)
    w = tl.where(m == float("-inf"), 0.0, tl.exp(m - m_max))
    total = tl.sum(lsum * w, axis=0)
    acc = tl.load(acc_ptr + rows[:, None] * D + d[None, :])
    # a padding row of a batch (position -1) saw no keys: zeros, not 0/0
    out = tl.sum(acc * w[:, None], axis=0) / tl.where(total == 0.0, 1.0, total)
    tl.store(out_ptr + row * stride_out + h * D + d, out.to(out_ptr.dtype.element_ty))


class DecodeAttention:
    """Split-K ("flash decoding") attention of one query token per row over the first pos+1
    positions of that row's cache slot: with one token and 2 KV heads there is too little work
    per head for one block, so the context is cut into NSPLIT slices, each reduced on its own,
    then combined. Reads only the filled part of each slot. `rows`: the batch it is sized for
    (the continuous batch's rows; 1 for the one-stream step). (Launched in order: with these
    kernels also launched early, as the GEMVs are, the whole step took 3.49 ms on the H200,
    against 3.34 with nothing early.)"""

    NSPLIT = 64
    BLOCK_N = 64

    def __init__(self, hq: int, hkv: int, d: int, device: torch.device, rows: int = 1) -> None:
        self.hq, self.hkv, self.d, self.rows = hq, hkv, d, rows
        self.group = hq // hkv
        self.group_pad = max(16, triton.next_power_of_2(self.group))
        n = rows * hkv * self.NSPLIT * self.group_pad
        self.acc = torch.empty(n, d, dtype=torch.float32, device=device)
        self.m = torch.empty(n, dtype=torch.float32, device=device)
        self.l = torch.empty(n, dtype=torch.float32, device=device)
        self.slot0 = torch.zeros(rows, dtype=torch.long, device=device)
        self._m, self._nsplit = 1, self.NSPLIT  # of the last split

    def __call__(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, pos: torch.Tensor,
                 scale: float, out: torch.Tensor, slots: torch.Tensor | None = None) -> None:
        self.split(q, k_cache, v_cache, pos, scale, slots)
        self.combine(out)

    def split(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, pos: torch.Tensor,
              scale: float, slots: torch.Tensor | None = None) -> None:
        """q: [hq * d] (one row) or [rows, hq, d] with each row's heads contiguous; the caches
        [kv_heads, max_len, d] (one slot) or [slots, kv_heads, max_len, d] with `slots` [rows]."""
        m = 1 if q.dim() == 1 else q.shape[0]
        if m > self.rows or (q.dim() > 1 and q[0].stride(-1) != 1):
            raise ValueError(f"attention sized for {self.rows} rows was given {m}")
        ks = kv = 0
        if k_cache.dim() == 4:
            ks, kv = k_cache.stride(0), v_cache.stride(0)
        self._m, self._nsplit = m, self.splits(m)
        _attn_split_kernel[(self.hkv, self._nsplit, m)](
            q, k_cache, v_cache, pos, self.slot0 if slots is None else slots, self.acc, self.m, self.l,
            q.stride(0) if q.dim() > 1 else 0, ks, k_cache.stride(-3), k_cache.stride(-2),
            kv, v_cache.stride(-3), v_cache.stride(-2), scale,
            HKV=self.hkv, GROUP=self.group, GROUP_PAD=self.group_pad, D=self.d, BLOCK_N=self.BLOCK_N,
            NSPLIT=self._nsplit, num_warps=4)

    def splits(self, rows: int) -> int:
        """Slices of the context per row: 64 for one row (2 KV heads would give 2 programs
        otherwise); fewer as rows multiply the programs (each launch of mostly idle programs cost
        ~9 us a layer at 16 rows of short context on the H200)."""
        return max(8, self.NSPLIT // triton.next_power_of_2(rows))

    def combine(self, out: torch.Tensor) -> None:
        """out: [hq * d] (one row) or [rows, hq * d]."""
        _attn_combine_kernel[(self.hq, self._m)](
            self.acc, self.m, self.l, out, out.stride(0) if out.dim() > 1 else 0, HKV=self.hkv,
            GROUP=self.group, GROUP_PAD=self.group_pad, D=self.d, NSPLIT=self._nsplit, num_warps=4)


def precompile(shape: GlmShape, device: torch.device, dtype: torch.dtype, max_len: int | None = None,
               slotted: bool = False) -> None:
    """Launch every kernel once on scratch tensors of the model's real sizes, so Triton compiles
    (or loads from its disk cache) the same specialisations the decode step will use. Each
    kernel compiles on its own thread: much of the work is LLVM and ptxas, outside the GIL.
    `slotted`: the kernels as gputui's own runtime calls them (a cache of many slots, and the
    attention of a batch's rows) rather than over transformers' one-slot cache."""
    hq, hkv, d = shape.hq, shape.hkv, shape.head_dim
    length = max_len or shape.max_positions

    def zeros(*size: int, dt: torch.dtype = dtype) -> torch.Tensor:
        return torch.zeros(*size, dtype=dt, device=device)

    att = DecodeAttention(hq, hkv, d, device)
    cache = (2, hkv, length, d) if slotted else (hkv, length, d)
    slot = zeros(1, dt=torch.long) if slotted else None

    def attn_split() -> None:
        att.split(zeros(hq * d), zeros(*cache), zeros(*cache), zeros(1, dt=torch.long), d ** -0.5, slot)

    def attn_combine() -> None:
        att.combine(zeros(hq * d))

    def attn_rows() -> None:  # a batch's rows (each number of context slices): q as the row ops leave it
        for rows in (2, 4, 8):
            att_rows = DecodeAttention(hq, hkv, d, device, rows=rows)
            att_rows.split(zeros(rows, hq, d), zeros(*cache), zeros(*cache), zeros(rows, dt=torch.long), d ** -0.5,
                           zeros(rows, dt=torch.long))
            att_rows.combine(zeros(rows, hq * d))

    def on_side_stream(fn: Any) -> None:
        if device.type != "cuda":  # Triton's interpreter (tests)
            with torch.inference_mode():
                fn()
            return
        stream = torch.cuda.Stream(device)
        with torch.cuda.stream(stream), torch.inference_mode():
            fn()
        stream.synchronize()

    first, *gemvs = precompile_jobs(shape.hidden, shape.ffn, hq, hkv, d, shape.rot, length, shape.vocab,
                                    shape.qkv_bias, device, dtype, slotted)
    on_side_stream(first)  # the first launch sets up Triton's driver once, alone
    jobs = [attn_split, attn_combine, *gemvs] + ([attn_rows] if slotted else [])
    errors: list[BaseException] = []

    def run(fn: Any) -> None:
        try:
            on_side_stream(fn)
        except BaseException as e:  # noqa: BLE001 - reported below, after every thread is done
            errors.append(e)

    if device.type != "cuda":  # the interpreter keeps one grid position: one kernel at a time
        for fn in jobs:
            on_side_stream(fn)
        return
    threads = [threading.Thread(target=run, args=(fn,), name="gputui-triton-compile") for fn in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# -- the continuous batch's step (glm_model.GlmModel.decode with TritonRowOps) ------------------
# Between its GEMMs (cuBLAS: at 2-32 rows each weight is read once for all of them) the plain
# step ran ~36 small PyTorch kernels a layer; on the H200 at 16 rows they took 2.1 of its 6.3 ms
# (bench concurrency, issue 27). These three do the same work in three launches.


@triton.jit
def _rms_norm_rows_kernel(x_ptr, w_ptr, out_ptr, stride_x, stride_out, K, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    k = tl.arange(0, BLOCK)
    mask = k < K
    x = tl.load(x_ptr + row * stride_x + k, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / K + eps)
    g = tl.load(w_ptr + k, mask=mask, other=0.0).to(tl.float32)
    odt = out_ptr.dtype.element_ty
    tl.store(out_ptr + row * stride_out + k, (g * (x * rstd).to(odt).to(tl.float32)).to(odt), mask=mask)


@triton.jit
def _rope_cache_rows_kernel(qkv_ptr, q_ptr, k_ptr, v_ptr, pos_ptr, slot_ptr, inv_freq_ptr, stride_qkv, stride_q,
                            stride_kslot, stride_kh, stride_ks, stride_vslot, stride_vh, stride_vs,
                            HQ: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, ROT: tl.constexpr,
                            NEOX: tl.constexpr):
    row = tl.program_id(0)
    head = tl.program_id(1)
    pos = tl.load(pos_ptr + row)
    if pos >= 0:  # a padding row (position -1) writes nothing
        slot = tl.load(slot_ptr + row).to(tl.int64)
        i = tl.arange(0, D // 2)
        # the two dimensions rotated together: (2i, 2i+1) in ChatGLM3, (i, i + ROT/2) in Llama's
        # family (rotate_half; ROT = D there)
        if NEOX:
            first, second = i, i + ROT // 2
        else:
            first, second = 2 * i, 2 * i + 1
        base = qkv_ptr + row * stride_qkv + head * D
        xe = tl.load(base + first).to(tl.float32)
        xo = tl.load(base + second).to(tl.float32)
        odt = q_ptr.dtype.element_ty
        rot = i < tl.where(head < HQ + HKV, ROT // 2, 0)  # v is not rotated
        freq = tl.load(inv_freq_ptr + i, mask=rot, other=0.0) * pos.to(tl.float32)
        c = tl.where(rot, tl.cos(freq).to(odt).to(tl.float32), 1.0)
        s = tl.where(rot, tl.sin(freq).to(odt).to(tl.float32), 0.0)
        re = (xe * c - xo * s).to(odt)
        ro = (xo * c + xe * s).to(odt)
        if head < HQ:
            dst = q_ptr + row * stride_q + head * D
        elif head < HQ + HKV:
            dst = k_ptr + slot * stride_kslot + (head - HQ) * stride_kh + pos * stride_ks
        else:
            dst = v_ptr + slot * stride_vslot + (head - HQ - HKV) * stride_vh + pos * stride_vs
        tl.store(dst + first, re)
        tl.store(dst + second, ro)


@triton.jit
def _silu_mul_rows_kernel(gu_ptr, out_ptr, stride_gu, stride_out, N, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    n = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = n < N
    odt = out_ptr.dtype.element_ty
    gate = tl.load(gu_ptr + row * stride_gu + n, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(gu_ptr + row * stride_gu + N + n, mask=mask, other=0.0).to(tl.float32)
    act = (gate / (1.0 + tl.exp(-gate))).to(odt).to(tl.float32)
    tl.store(out_ptr + row * stride_out + n, (up * act).to(odt), mask=mask)


class TritonRowOps:
    """glm_model.TorchRowOps' contract in three Triton kernels (the batch's step on a GPU)."""

    def __init__(self, shape: GlmShape, inv_freq: torch.Tensor) -> None:
        self.s = shape
        self.inv_freq = inv_freq

    def norm(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        m, k = x.shape
        out = torch.empty_like(x)
        _rms_norm_rows_kernel[(m,)](x, w, out, x.stride(0), out.stride(0), k, self.s.eps,
                                    BLOCK=triton.next_power_of_2(k), num_warps=8)
        return out

    def rope_cache(self, qkv: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, slots: torch.Tensor,
                   pos: torch.Tensor) -> torch.Tensor:
        s = self.s
        m = qkv.shape[0]
        q = torch.empty(m, s.hq, s.head_dim, dtype=qkv.dtype, device=qkv.device)
        _rope_cache_rows_kernel[(m, s.hq + 2 * s.hkv)](
            qkv, q, kc, vc, pos, slots, self.inv_freq, qkv.stride(0), q.stride(0),
            kc.stride(0), kc.stride(1), kc.stride(2), vc.stride(0), vc.stride(1), vc.stride(2),
            HQ=s.hq, HKV=s.hkv, D=s.head_dim, ROT=s.rot, NEOX=s.neox, num_warps=1)
        return q

    def silu_mul(self, gu: torch.Tensor) -> torch.Tensor:
        m, n2 = gu.shape
        n = n2 // 2
        out = torch.empty(m, n, dtype=gu.dtype, device=gu.device)
        block = 1024
        _silu_mul_rows_kernel[(m, triton.cdiv(n, block))](gu, out, gu.stride(0), out.stride(0), n, BLOCK=block,
                                                         num_warps=4)
        return out
