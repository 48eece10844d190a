"""Matrix-vector products for batch-1 decode, with the small ops around them fused in.

Why our own kernel and not cuBLAS: at batch 1 every matmul of a decode step is a GEMV whose
only job is to stream its weight once at the memory's speed. On the H200, cuBLAS's GEMVs over
ChatGLM3-6B's layers reached 3463-3509 GB/s and a plain Triton GEMV 3856 GB/s, of the 4230 GB/s
a plain read reaches (issue 20). Fusing also removes kernels: the RMSNorm is computed by the
GEMV that reads its output (each program recomputes the norm of one hidden-size vector from L2,
cheaper than a launch and a round trip), and the residual add and SiLU*up are done by the GEMV
that writes them. Per layer that is three kernels fewer.

Numerics follow transformers' GLM code: fp32 accumulation, rounding to the storage dtype
wherever the reference rounds (after the norm, after each linear, after the SiLU).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

from gputui.core import env
from gputui.models.glm.gemv_reference import ADD_TO_OUT, SILU_PAIR, STORE

ROPE_CACHE = 3  # the QKV epilogue of GLM (gemv's `rope`)


@triton.jit
def _gemv_kernel(w_ptr, x_ptr, lnw_ptr, bias_ptr, out_ptr, N, K, stride_w, eps,
                 k_cache_ptr, v_cache_ptr, pos_ptr, inv_freq_ptr, stride_kh, stride_ks, stride_vh, stride_vs,
                 slot_ptr, stride_kslot, stride_vslot,
                 NORM_IN: tl.constexpr, HAS_BIAS: tl.constexpr, EPILOGUE: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr, PDL: tl.constexpr,
                 HQ: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, ROT: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    kk = tl.arange(0, BLOCK_K)
    xdt = x_ptr.dtype.element_ty
    # The first weight tile depends on no earlier kernel: with programmatic dependent launch it
    # is fetched while the kernel before this one is still finishing.
    wrow = w_ptr + rows[:, None] * stride_w
    if EVEN_K:
        wmask = rmask[:, None]
    else:
        wmask = rmask[:, None] & (kk[None, :] < K)
    w = tl.load(wrow + kk[None, :], mask=wmask, other=0.0, eviction_policy="evict_first")
    w2 = w  # SILU_PAIR: the matching "up" tile, N rows further on
    if EPILOGUE == 2:
        w2 = tl.load(wrow + N * stride_w + kk[None, :], mask=wmask, other=0.0, eviction_policy="evict_first")
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()  # from here on, what the earlier kernels wrote is visible
    rstd = 1.0
    if NORM_IN:  # RMSNorm of the whole input vector, recomputed by every program
        ss = tl.zeros((BLOCK_K,), tl.float32)
        for k0 in range(0, K, BLOCK_K):
            xs = tl.load(x_ptr + k0 + kk, mask=k0 + kk < K, other=0.0).to(tl.float32)
            ss += xs * xs
        rstd = tl.rsqrt(tl.sum(ss, axis=0) / K + eps)
    acc = tl.zeros((BLOCK_M, BLOCK_K), tl.float32)
    acc2 = tl.zeros((BLOCK_M, BLOCK_K), tl.float32)  # SILU_PAIR only (dropped otherwise)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + kk
        if EVEN_K:
            x = tl.load(x_ptr + cols).to(tl.float32)
        else:
            x = tl.load(x_ptr + cols, mask=cols < K, other=0.0).to(tl.float32)
        if NORM_IN:
            g = tl.load(lnw_ptr + cols, mask=cols < K, other=0.0).to(tl.float32)
            x = (g * (x * rstd).to(xdt).to(tl.float32)).to(xdt).to(tl.float32)
        acc += w.to(tl.float32) * x[None, :]
        if EPILOGUE == 2:
            acc2 += w2.to(tl.float32) * x[None, :]
        # the next tile, asked for before the loop comes round (past the end: all masked off)
        nxt = cols + BLOCK_K
        nmask = rmask[:, None] & (nxt[None, :] < K)
        w = tl.load(wrow + nxt[None, :], mask=nmask, other=0.0, eviction_policy="evict_first")
        if EPILOGUE == 2:
            w2 = tl.load(wrow + N * stride_w + nxt[None, :], mask=nmask, other=0.0, eviction_policy="evict_first")
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(bias_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
    odt = out_ptr.dtype.element_ty
    if EPILOGUE == 0:
        tl.store(out_ptr + rows, y.to(odt), mask=rmask)
    elif EPILOGUE == 1:  # out += W x, rounded as the reference adds two bf16 tensors
        prev = tl.load(out_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
        tl.store(out_ptr + rows, (prev + y.to(odt).to(tl.float32)).to(odt), mask=rmask)
    elif EPILOGUE == 2:  # out = up * silu(gate); W holds the N gate rows, then the N up rows
        gate = y.to(odt).to(tl.float32)
        up = tl.sum(acc2, axis=1).to(odt).to(tl.float32)
        act = (gate / (1.0 + tl.exp(-gate))).to(odt).to(tl.float32)
        tl.store(out_ptr + rows, (up * act).to(odt), mask=rmask)
    else:  # GLM's q, k, v: rotate q and k at `pos` (pairs 2i, 2i+1), q to out, k and v into the cache
        ye, yo = tl.split(tl.reshape(y.to(odt).to(tl.float32), (BLOCK_M // 2, 2)))
        even = pid * BLOCK_M + 2 * tl.arange(0, BLOCK_M // 2)
        head = even // D
        d = even % D
        pos = tl.load(pos_ptr)
        slot = tl.load(slot_ptr).to(tl.int64)  # the stream's cache slot (0 for a one-slot cache)
        k_cache_ptr += slot * stride_kslot
        v_cache_ptr += slot * stride_vslot
        rot = (d // 2 < ROT // 2) & (head < HQ + HKV)
        freq = tl.load(inv_freq_ptr + d // 2, mask=rot, other=0.0) * pos.to(tl.float32)
        # the reference computes cos and sin in fp32 and stores them in the model's dtype
        c = tl.where(rot, tl.cos(freq).to(odt).to(tl.float32), 1.0)
        s = tl.where(rot, tl.sin(freq).to(odt).to(tl.float32), 0.0)
        re = (ye * c - yo * s).to(odt)
        ro = (yo * c + ye * s).to(odt)
        live = even < N
        is_q = live & (head < HQ)
        tl.store(out_ptr + even, re, mask=is_q)
        tl.store(out_ptr + even + 1, ro, mask=is_q)
        live = live & (even * 0 + pos >= 0)  # never a write before the cache (a padding row: position -1)
        is_k = live & (head >= HQ) & (head < HQ + HKV)
        kdst = k_cache_ptr + (head - HQ) * stride_kh + pos * stride_ks + d
        tl.store(kdst, re, mask=is_k)
        tl.store(kdst + 1, ro, mask=is_k)
        is_v = live & (head >= HQ + HKV)
        vdst = v_cache_ptr + (head - HQ - HKV) * stride_vh + pos * stride_vs + d
        tl.store(vdst, re, mask=is_v)
        tl.store(vdst + 1, ro, mask=is_v)


# (BLOCK_M, BLOCK_K, num_warps) by the weight's shape [rows, K]. From the sweep of every
# configuration in bench/suites/gemv.py on the H200 (RESULTS.md, session 6), ChatGLM3-6B's
# shapes: few rows and wide K tiles per program keep many loads in flight and give every SM
# several programs even for a 4096-row weight. Other shapes take the one that did well on all.
TUNED = {
    (4608, 4096): (4, 1024, 4),  # q, k, v (norm before; bias, rotary and cache write after)
    (4096, 4096): (8, 1024, 4),  # o
    (27392, 4096): (4, 1024, 4),  # gate and up (two tiles a step)
    (4096, 13696): (8, 1024, 4),  # down
    (65024, 4096): (4, 1024, 4),  # the head
}
DEFAULT_CONFIG = (4, 1024, 4)  # within 7 % of the best on every shape there


def config_for(rows: int, k: int) -> tuple[int, int, int]:
    return TUNED.get((rows, k), DEFAULT_CONFIG)


PDL = env.switched_on("GPUTUI_PDL")  # programmatic dependent launch (Hopper and later)


@functools.cache
def _pdl_capable(index: int) -> bool:
    return torch.cuda.get_device_capability(index) >= (9, 0)


def pdl_on(device: torch.device) -> bool:
    """Whether a GEMV launched on `device` may start before the kernel before it has finished
    (it waits for that kernel's results inside; see the kernel). Off on the CPU (Triton's
    interpreter) and before Hopper."""
    return PDL and device.type == "cuda" and _pdl_capable(device.index or 0)


@dataclass(frozen=True)
class RopeCache:
    """Where the QKV GEMV puts GLM's rotated q (its `out`), and k and v: the layer's caches at
    position `pos` (a 1-element device tensor) - [kv_heads, max_len, head_dim] views, or
    [slots, kv_heads, max_len, head_dim] with `slot` (a 1-element device tensor) naming the one."""

    k_cache: torch.Tensor
    v_cache: torch.Tensor
    pos: torch.Tensor
    inv_freq: torch.Tensor  # fp32, rot // 2 entries
    hq: int
    hkv: int
    head_dim: int
    rot: int  # rotated dimensions per head (GLM: half)
    slot: torch.Tensor | None = None

    def kernel_args(self) -> tuple[Any, ...]:
        k, v = self.k_cache, self.v_cache
        slotted = k.dim() == 4
        if slotted != (self.slot is not None):
            raise ValueError("gemv: a cache of several slots needs `slot`, and only such a cache takes one")
        return (k, v, self.pos, self.inv_freq, k.stride(-3), k.stride(-2), v.stride(-3), v.stride(-2),
                self.slot if self.slot is not None else self.pos, k.stride(0) if slotted else 0,
                v.stride(0) if slotted else 0)


def gemv(w: torch.Tensor, x: torch.Tensor, out: torch.Tensor, *, bias: torch.Tensor | None = None,
         norm: tuple[torch.Tensor, float] | None = None, epilogue: int = STORE,
         config: tuple[int, int, int] | None = None, rope: RopeCache | None = None) -> torch.Tensor:
    """out <- W @ x for a row-major W ([N, K], or [2N, K] for SILU_PAIR) and a vector x ([K]).
    `norm` = (weight, eps): x is first RMS-normalised and scaled (the reference's RMSNorm).
    `epilogue`: STORE writes out ([N]); ADD_TO_OUT adds to it (a residual); SILU_PAIR writes
    up * silu(gate) where gate is W's first N rows and up its last N. `rope`: W is GLM's
    q, k, v block; q and k are rotated, q written to out and k, v to the cache (RopeCache)."""
    rows, k = w.shape
    n = rows // 2 if epilogue == SILU_PAIR else rows
    want_out = rope.hq * rope.head_dim if rope is not None else n
    if x.numel() != k or out.numel() != want_out or w.stride(1) != 1:
        raise ValueError(f"gemv: weight {tuple(w.shape)}, input {x.numel()}, output {out.numel()}")
    if rope is not None:
        epilogue = ROPE_CACHE
        if rows != (rope.hq + 2 * rope.hkv) * rope.head_dim:
            raise ValueError(f"gemv: {rows} q/k/v rows for {rope.hq}+2x{rope.hkv} heads of {rope.head_dim}")
    if x.data_ptr() == out.data_ptr():  # every program reads all of x while others write out
        raise ValueError("gemv: the input cannot be the output (the programs would race)")
    block_m, block_k, warps = config or config_for(rows, k)
    block_k = min(block_k, triton.next_power_of_2(k))
    if rope is not None:
        block_m = max(2, block_m - block_m % 2)  # a rotated pair is never split between programs
    lnw, eps = norm if norm is not None else (x, 0.0)
    pdl = pdl_on(w.device)
    r = rope
    caches = r.kernel_args() if r is not None else (x, x, x, x, 0, 0, 0, 0, x, 0, 0)
    _gemv_kernel[(triton.cdiv(n, block_m),)](
        w, x, lnw, bias if bias is not None else x, out, n, k, w.stride(0), eps, *caches,
        NORM_IN=norm is not None, HAS_BIAS=bias is not None, EPILOGUE=epilogue,
        BLOCK_M=block_m, BLOCK_K=block_k, EVEN_K=k % block_k == 0, PDL=pdl,
        HQ=r.hq if r else 0, HKV=r.hkv if r else 0, D=r.head_dim if r else 0, ROT=r.rot if r else 0,
        num_warps=warps, launch_pdl=pdl)
    return out


def precompile_jobs(hidden: int, ffn: int, hq: int, hkv: int, head_dim: int, rot: int, max_len: int, vocab: int,
                    has_bias: bool, device: torch.device, dtype: torch.dtype, slotted: bool = False) -> list[Any]:
    """One launch per specialisation the fused GLM step uses, on scratch tensors of the real
    sizes (what glm_triton.precompile runs on its threads). `slotted`: over a cache of slots."""
    qkv_rows, attn_dim = (hq + 2 * hkv) * head_dim, hq * head_dim

    def z(*shape: int, dt: torch.dtype = dtype) -> torch.Tensor:
        return torch.zeros(*shape, dtype=dt, device=device)

    def qkv() -> None:
        cache = (2, hkv, max_len, head_dim) if slotted else (hkv, max_len, head_dim)
        rope = RopeCache(z(*cache), z(*cache), z(1, dt=torch.long), z(rot // 2, dt=torch.float32), hq, hkv,
                         head_dim, rot, z(1, dt=torch.long) if slotted else None)
        gemv(z(qkv_rows, hidden), z(hidden), z(attn_dim), bias=z(qkv_rows) if has_bias else None,
             norm=(z(hidden), 1e-5), rope=rope)

    def out_proj() -> None:
        gemv(z(hidden, attn_dim), z(attn_dim), z(hidden), epilogue=ADD_TO_OUT)

    def gate_up() -> None:
        gemv(z(2 * ffn, hidden), z(hidden), z(ffn), norm=(z(hidden), 1e-5), epilogue=SILU_PAIR)

    def down() -> None:
        gemv(z(hidden, ffn), z(ffn), z(hidden), epilogue=ADD_TO_OUT)

    def head() -> None:
        gemv(z(vocab, hidden), z(hidden), z(vocab), norm=(z(hidden), 1e-5))

    return [qkv, out_proj, gate_up, down, head]
