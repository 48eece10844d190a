"""Decode-time attention that reads the grouped KV cache in place.

With a static cache every decode step attends over the whole preallocated context. The stock
SDPA path (transformers 5.17) first repeats each of ChatGLM3's 2 KV heads 16 times to match the
32 query heads: for an 8k cache that writes and reads ~7 GB per token, more than the weights
themselves. Folding the 16 query heads of a group into the query-length axis instead lets one
SDPA call read each KV head once. Prefill (more than one query token) keeps the stock path.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "gputui_gqa_sdpa"


def gqa_sdpa_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    n_rep = getattr(module, "num_key_value_groups", 1)
    b, h, q_len, d = query.shape
    if q_len != 1 or n_rep == 1 or key.shape[1] * n_rep != h:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    q = query.reshape(b, h // n_rep, n_rep, d)
    mask = attention_mask[:, :, :, : key.shape[2]] if attention_mask is not None else None
    # Plain matmul -> softmax -> matmul. The fused SDPA kernels parallelise over batch x heads,
    # which is 1 x 2 here: measured on an H100, cuDNN's took 157 us per layer at an 8k cache
    # (39% of the decode step); these three kernels read K and V once at memory speed.
    scale = scaling if scaling is not None else d ** -0.5
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    out = torch.matmul(torch.softmax(scores, dim=-1).to(value.dtype), value)
    return out.reshape(b, h, 1, d).transpose(1, 2).contiguous(), None


def use_gqa_attention(model: Any) -> None:
    """Register the function (once) and switch `model` to it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, gqa_sdpa_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    try:
        model.set_attn_implementation(NAME)
    except (AttributeError, ValueError, TypeError):
        model.config._attn_implementation = NAME
