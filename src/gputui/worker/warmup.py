"""Make every device ready for work before a single weight arrives.

The first cuBLAS call on a GPU allocates its handle and workspace, and the first attention
call its cuDNN/flash state. If those come after the weights, on a nearly full GPU they fail
(CUBLAS_STATUS_NOT_INITIALIZED at cublasCreate; CUDNN_STATUS_INTERNAL_ERROR in SDPA at 8 MiB
free, measured on an H100). Done first, a shortage shows here, before Ready, with a clear
message - never at a user's first chat.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F

from gputui.worker import faults


def configure_visible_devices(gpu_uuids: list[str]) -> None:
    """Pin this process to exactly its GPUs. Must run before CUDA initialises: the driver reads
    CUDA_VISIBLE_DEVICES once, at cuInit, whichever library calls it first (torch, Triton...)."""
    if torch.cuda.is_initialized() or driver_initialized():
        raise RuntimeError("CUDA was initialised before the worker chose its GPUs")
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_uuids)


def driver_initialized() -> bool:
    """Has anything in this process called cuInit yet? (No driver: no.)"""
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int()
    return int(lib.cuDeviceGetCount(ctypes.byref(count))) != CUDA_ERROR_NOT_INITIALIZED


CUDA_ERROR_NOT_INITIALIZED = 3


def warm_device(device: torch.device, dtypes: list[torch.dtype]) -> dict[str, Any]:
    """One small matmul per dtype and one attention call on `device`; returns what it saw."""
    info: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        # cuDNN's attention builds a plan for every new sequence length: measured on an H100,
        # BLIP2's first answer to each new question ran at 12-23 tok/s instead of ~50, and its
        # warm-up took 3.4 s instead of 1.0. The flash / memory-efficient kernels have no
        # per-shape setup. Set before the warm-up attention call, so it warms what will serve.
        torch.backends.cuda.enable_cudnn_sdp(False)
        torch.cuda.set_device(device)
        free_before, total = torch.cuda.mem_get_info(device)
        info["free_after_context_bytes"] = int(free_before)
        props = torch.cuda.get_device_properties(device)
        info["uuid"] = _uuid_text(getattr(props, "uuid", None))
        info["name"] = props.name
        faults.pause("first_matmul")
    for dt in dtypes:
        a = torch.randn(64, 64, device=device, dtype=dt)
        (a @ a).sum().item()
        q = torch.randn(1, 2, 16, 64, device=device, dtype=dt)
        F.scaled_dot_product_attention(q, q, q, is_causal=True).sum().item()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        info["free_after_warmup_bytes"] = int(torch.cuda.mem_get_info(device)[0])
    return info


def _uuid_text(uuid: Any) -> str | None:
    if uuid is None:
        return None
    s = str(uuid)
    return s if s.startswith("GPU-") else f"GPU-{s}"
