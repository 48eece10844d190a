"""What both ChatGLM3 runtimes (glm_runtime, and chatglm3_runtime on transformers) check their
fused decode step against, and the Triton kernels' compile started while the weights load."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch

from gputui.models.glm.glm_model import shape_of

# Relative L2 error allowed between the fused step's logits and the plain step's. bf16 noise
# alone reaches it partly (ChatGLM3-6B shapes, random weights, H100: stock bf16 vs a float32
# reference 7.1% mean / 8.0% max, fused vs stock up to 7.9%); a wiring mistake gives order 1.
FUSED_TOLERANCE = 0.25
# The same kernels replayed from a CUDA graph compute the same numbers; anything over rounding
# noise means the graph runs them out of order.
REPLAY_TOLERANCE = 1e-3
PRECOMPILE_TIMEOUT_S = 120.0


def fused_step_unavailable(precompile: threading.Thread | None) -> str | None:
    """Why the fused step cannot be tried here (off by the environment, no Triton, its kernels
    not compiled in time), or None: go on and check it."""
    from gputui.models.glm.glm_decode import fused_decode_enabled, triton_available

    if not fused_decode_enabled():
        return "off (GPUTUI_FUSED_DECODE=0)"
    if not triton_available():
        return "triton is not installed"
    if precompile is not None:
        precompile.join(PRECOMPILE_TIMEOUT_S)
        if precompile.is_alive():  # never seen; a hung compiler must not hang the load
            return f"the Triton kernels did not compile within {PRECOMPILE_TIMEOUT_S:.0f} s"
    return None


def start_kernel_precompile(path: Path, device: torch.device, dtype: torch.dtype, timings: dict[str, float],
                            slotted: bool) -> threading.Thread | None:
    """Compile the fused step's Triton kernels on a thread while the weights load (the first
    time on a machine: 2.6-3.6 s on an H100, 5.3 s before the kernels compiled in parallel;
    Triton caches them on disk, so later loads take ~0.9 s here, overlapped)."""
    from gputui.models.glm.glm_decode import fused_decode_enabled, triton_available

    if device.type != "cuda" or not fused_decode_enabled() or not triton_available():
        return None
    from gputui.models.glm.glm_triton import precompile

    shape = shape_of(path)

    def run() -> None:
        t0 = time.monotonic()
        try:
            precompile(shape, device, dtype, slotted=slotted)
        except Exception:  # noqa: BLE001 - the check at warm-up compiles (or fails) for real
            pass
        timings["triton_precompile_s"] = time.monotonic() - t0

    t = threading.Thread(target=run, name="gputui-triton-precompile", daemon=True)
    t.start()
    return t
