"""The test-only echo kind's runtime (see echo_kind.py): a real worker loads its one tensor."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


class EchoRuntime:
    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight

    @classmethod
    def load(cls, spec: dict[str, Any], devices: list[torch.device], dtype: torch.dtype) -> EchoRuntime:
        from safetensors.torch import load_file

        weight = load_file(str(Path(spec["path"]) / "model.safetensors"))["weight"]
        return cls(weight.to(devices[0], dtype))

    def warm_up(self) -> None:
        pass

    def generate(self, request: dict[str, Any], emit: Callable[..., None], cancelled: Callable[[], bool]) -> dict[str, Any]:
        last = str((request.get("messages") or [{}])[-1].get("content", ""))
        words = last[::-1].split(" ")
        n = 0
        for word in words:
            if cancelled():
                return {"new_tokens": n, "finish": "cancelled"}
            emit(word + (" " if n < len(words) - 1 else ""))
            n += 1
        return {"new_tokens": n, "finish": "stop", "prompt_tokens": len(last), "ttft_s": 0.0, "tokens_per_s": None}

    def weight_bytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()

    def info(self) -> dict[str, Any]:
        return {"decode": "echo"}
