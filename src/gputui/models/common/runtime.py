"""What a model kind's runtime is to the worker: the one interface every kind implements.

The worker (gputui/worker/loading.py and main.py) drives a runtime through these calls only,
in the fixed order: `load` (weights onto the devices it is given, after cuBLAS is warm),
`warm_up` (take the memory a full-context request needs, capture graphs), then `generate` per
request. A new kind is a class with these methods and an entry in gputui.core.kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch


class Runtime(Protocol):
    @classmethod
    def load(cls, spec: dict[str, Any], devices: list[torch.device], dtype: torch.dtype) -> Runtime:
        """The model of spec["path"] on `devices` (one, or one per range of spec["layer_split"])."""
        ...

    def warm_up(self) -> None:
        """Allocate now what a full-context request will need; capture what can be captured."""
        ...

    def generate(self, request: dict[str, Any], emit: Callable[..., None],
                 cancelled: Callable[[], bool]) -> dict[str, Any]:
        """Answer one request: emit(text) per piece (emit("", notice=...) for a notice), stop
        within one token once cancelled() is true; return the stats (new_tokens, ttft_s,
        tokens_per_s, finish, ...). An exception with a `user_message` is shown as that."""
        ...

    def weight_bytes(self) -> int: ...

    def info(self) -> dict[str, Any]:
        """What the dashboard shows of it (decode path, load timings); JSON."""
        ...


class PromptTooLong(ValueError):
    """A prompt over what the model reads; its `user_message` (what the chat shows) says what to do."""

    def __init__(self, message: str, user_message: str) -> None:
        super().__init__(message)
        self.user_message = user_message
