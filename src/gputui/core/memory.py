"""What a process needs on a GPU before it can do any work, and the headroom that leaves.

The figures are measurements, not guesses. Each says where it came from; bench/gpu_proof.py
measures them again on the device machine and bench/RESULTS.md records the latest run.
"""

from __future__ import annotations

from gputui.core.units import MiB

# A bare CUDA context (torch.cuda.init + a first 4 MiB allocation) as seen by NVML for a new
# process: H100 80GB HBM3, driver 580.159, torch 2.11 + CUDA 13.0, `bench/gpu_probes.py context`
# on 2026-11-25 (an earlier measurement on the same stack gave 524 MiB).
CUDA_CONTEXT_BYTES = 538 * MiB

# What the first bf16 matmul adds on top of the context: the cuBLAS handle, torch's 32 MiB
# cuBLAS workspace and the kernels it loads (same run: 538 -> 730 MiB; an earlier count of
# handle + workspace alone gave 98 MiB).
FIRST_MATMUL_BYTES = 192 * MiB

# Below this much free memory cublasCreate itself fails (CUBLAS_STATUS_NOT_INITIALIZED /
# ALLOC_FAILED): measured on the H100 by filling it with bench/hog.py and calling one matmul
# (64 and 38 MiB free: ALLOC_FAILED at cublasCreate; 98 MiB: the 32 MiB workspace OOMs).
CUBLAS_CREATE_MIN_FREE_BYTES = 66 * MiB

# What a brand-new process needs to reach its first matmul on a GPU.
NEW_PROCESS_FIRST_MATMUL_BYTES = CUDA_CONTEXT_BYTES + FIRST_MATMUL_BYTES

HEADROOM_WARNING = (
    "a new process's first matmul here would fail with "
    "CUBLAS_STATUS_ALLOC_FAILED / NOT_INITIALIZED"
)


def headroom_bytes(free_bytes: int | None) -> int | None:
    """Free memory left after a new process made its context and first cuBLAS call."""
    if free_bytes is None:
        return None
    return free_bytes - NEW_PROCESS_FIRST_MATMUL_BYTES


def first_matmul_would_fail(free_bytes: int | None) -> bool:
    """True when a new process on this GPU could not get as far as its first matmul."""
    room = headroom_bytes(free_bytes)
    return room is not None and room < 0
