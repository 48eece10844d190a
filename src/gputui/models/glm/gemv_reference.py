"""What the decode GEMVs compute, in plain PyTorch (importable without Triton)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

STORE, ADD_TO_OUT, SILU_PAIR = 0, 1, 2  # what a GEMV does with its result (its epilogue)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' GLM RMSNorm: fp32 statistics, the normalised vector rounded to x's dtype,
    then scaled in that dtype."""
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def reference(w: torch.Tensor, x: torch.Tensor, out: torch.Tensor, *, bias: torch.Tensor | None = None,
              norm: tuple[torch.Tensor, float] | None = None, epilogue: int = STORE) -> torch.Tensor:
    """gemv_triton.gemv's contract in plain PyTorch, with transformers' roundings (the tests'
    yardstick and the fused step's path without Triton)."""
    if norm is not None:
        x = rms_norm(x, *norm)
    y = F.linear(x, w, bias)
    if epilogue == STORE:
        out.copy_(y)
    elif epilogue == ADD_TO_OUT:
        out.copy_(out + y)
    else:
        gate, up = y.chunk(2, dim=-1)
        out.copy_(up * F.silu(gate))
    return out
