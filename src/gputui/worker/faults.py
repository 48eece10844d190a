"""Fault injection for the GPU proofs (bench/fault_proof.py), off unless asked for.

GPUTUI_FAULT_PAUSE=POINT:SECONDS holds the worker at that point so another process can fill
the GPU on cue. Points: warming_cublas, first_matmul (context made, no cuBLAS yet),
loading_weights.
"""

from __future__ import annotations

import os
import time


def pause(point: str) -> None:
    spec = os.environ.get("GPUTUI_FAULT_PAUSE", "")
    name, _, seconds = spec.partition(":")
    if name == point and seconds:
        time.sleep(float(seconds))
