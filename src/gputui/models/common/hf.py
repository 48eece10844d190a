"""Helpers for running transformers models inside a worker, shared by every kind's runtime:
streaming text out of generate(), stopping it on a cancel, and the cache names that moved."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer


def cache_keyword(model: Any) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x, old name removed in 5.40)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.inference_mode()
def prefill_static(model: Any, cache: Any, ids: list[int], device: torch.device, chunk: int) -> torch.Tensor:
    """A prompt into a transformers static cache from position 0, `chunk` tokens at a time (so
    activation memory stays what the preflight counted); the logits after its last token."""
    cache.reset()
    kw = cache_keyword(model)
    prompt = torch.tensor([ids], device=device)
    logits = None
    for start in range(0, prompt.shape[1], chunk):
        part = prompt[:, start:start + chunk]
        pos = torch.arange(start, start + part.shape[1], device=device)
        out = model(input_ids=part, **{kw: cache}, cache_position=pos, use_cache=True, logits_to_keep=1)
        logits = out.logits[0, -1]
    assert logits is not None
    return logits


@torch.inference_mode()
def step_static(model: Any, cache: Any, token_id: int, position: int, device: torch.device) -> torch.Tensor:
    """One token through the model's own forward at `position` of its static cache: the logits."""
    out = model(input_ids=torch.tensor([[token_id]], device=device), **{cache_keyword(model): cache},
                cache_position=torch.tensor([position], device=device), use_cache=True)
    return out.logits[0, -1]


def layer_kv(cache: Any, layer: int) -> tuple[Any, Any]:
    """A transformers cache's keys and values of one layer ([batch, heads, length, dim]), from
    the per-layer objects of transformers 5 or the key/value lists before them."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        lay = layers[layer]
        return getattr(lay, "keys", None), getattr(lay, "values", None)
    return cache.key_cache[layer], cache.value_cache[layer]


def generated_cache(output: Any) -> Any:
    """The cache that generate(return_dict_in_generate=True) handed back (`cache` from
    transformers 5.2x, `past_key_values` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


class TextStream(BaseStreamer):
    """Receives ids from generate() and emits text pieces as whole characters arrive."""

    def __init__(self, tokenizer: Any, emit: Callable[..., None], skip: int) -> None:
        self.tokenizer, self.emit, self.skip = tokenizer, emit, skip
        self.ids: list[int] = []
        self.sent = ""
        self.count = 0
        self.first_at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if self.skip:  # the first put is the prompt
            self.skip = 0
            return
        self.ids.extend(value.reshape(-1).tolist())
        self.count += value.numel()
        self.first_at = self.first_at or time.monotonic()
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not text.endswith("\ufffd") and len(text) > len(self.sent):
            self.emit(text[len(self.sent):])
            self.sent = text

    def end(self) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if len(text) > len(self.sent):
            self.emit(text[len(self.sent):])
            self.sent = text


class CancelCriteria(StoppingCriteria):
    def __init__(self, cancelled: Callable[[], bool]) -> None:
        self.cancelled = cancelled

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> bool:  # type: ignore[override]
        return bool(self.cancelled())
