"""Choosing the next token: greedy at temperature 0, else temperature + nucleus (top_p)."""

from __future__ import annotations

import torch


def next_token(logits: torch.Tensor, temperature: float, top_p: float,
               generator: torch.Generator | None = None) -> int:
    """`logits`: [vocab] for the last position."""
    if temperature <= 0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, 0) - sorted_p < top_p  # always keeps the top token
        sorted_p = sorted_p * keep
        choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=generator)
        return int(idx[choice].item())
    return int(torch.multinomial(probs, 1, generator=generator).item())
