"""Fault injection for the GPU proofs (bench/fault_proof.py), off unless asked for.

GPUTUI_FAULT_PAUSE=POINT:SECONDS holds the worker at that point so another process can fill
the GPU on cue. Points: warming_cublas, first_matmul (context made, no cuBLAS yet),
loading_weights; and token, which holds every token sent (a slow model: a client can leave mid-reply).
GPUTUI_FAULT_DEVICE_ASSERT=generate makes the next request hit a real device-side assert (an
out-of-bounds gather on the GPU), as a bad token id would.
"""

from __future__ import annotations

import functools
import time

from gputui.core import env


@functools.cache
def _pause_spec() -> tuple[str, float]:
    """Read once per worker: pause("token") runs on every token sent."""
    name, _, seconds = (env.get("GPUTUI_FAULT_PAUSE") or "").partition(":")
    return name, float(seconds) if seconds else 0.0


def pause(point: str) -> None:
    name, seconds = _pause_spec()
    if name == point and seconds:
        time.sleep(seconds)


def device_assert(point: str) -> None:
    if env.get("GPUTUI_FAULT_DEVICE_ASSERT") != point:
        return
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("CUDA error: device-side assert triggered (simulated: no GPU here)")
    table = torch.zeros(4, device="cuda")
    table[torch.tensor([1 << 20], device="cuda")].sum().item()
