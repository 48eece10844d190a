"""The catalogue of errors gputui explains: data, one entry per error, each with a test.

`live` names what to look up in the live state to make the explanation concrete:
  "headroom" - GPUs too full for a new process's first cuBLAS call
  "memory"   - free memory per GPU and who holds it
  "mapping"  - NVML vs CUDA numbering under the current environment
  "driver"   - driver version vs the CUDA version torch was built for
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    id: str
    pattern: str
    title: str
    causes: tuple[str, ...]
    fixes: tuple[str, ...]
    live: tuple[str, ...] = ()

    def matches(self, text: str) -> bool:
        return re.search(self.pattern, text, re.IGNORECASE | re.DOTALL) is not None


CATALOGUE: tuple[Entry, ...] = (
    Entry(
        "cublas_init",
        r"CUBLAS_STATUS_(NOT_INITIALIZED|ALLOC_FAILED)",
        "cuBLAS could not create its handle: the GPU was (nearly) full at the process's first matmul",
        ("the first cuBLAS call on a GPU allocates its handle and a workspace; with under ~66 MiB free "
         "(measured on an H100) cublasCreate fails",
         "with device_map='auto' the second model fills the GPU the first one's cuBLAS call still needed",
         "another user's process took the memory after the model loaded"),
        ("load each model with gputui: it warms cuBLAS on the GPU before any weight, and refuses a GPU "
         "that is too full instead of failing later",
         "put the second model on another GPU, or free memory on this one"),
        ("headroom", "memory"),
    ),
    Entry(
        "cudnn_internal",
        r"CUDNN_STATUS_INTERNAL_ERROR|CUDNN_STATUS_ALLOC_FAILED",
        "cuDNN (used by attention) could not get its workspace",
        ("the first attention call needs a little memory of its own; measured on an H100, SDPA failed at "
         "8 MiB free even with cuBLAS already warm",),
        ("warm attention before the weights (gputui does), or leave more free memory on that GPU",),
        ("headroom", "memory"),
    ),
    Entry(
        "oom",
        r"CUDA out of memory|OutOfMemoryError",
        "the GPU ran out of memory",
        ("the model plus its KV cache and activations do not fit in what was free",
         "other processes (yours or other users') hold memory on that GPU",
         "a crashed process in-process left memory held until it exits"),
        ("check `gputui status` for who holds memory; pick a GPU with room (gputui preflight says which fits)",
         "lower max_context, or use bfloat16/float16 weights",
         "end the worker that OOMed: a CUDA process is not reliable after an OOM"),
        ("memory",),
    ),
    Entry(
        "device_assert",
        r"device-side assert triggered",
        "a kernel hit an assert (typically an index out of range, e.g. a token id >= vocabulary size)",
        ("token ids from a tokenizer that does not match the model", "labels or indices out of range"),
        ("the process's CUDA context is poisoned: end it and start a new one (gputui reloads the worker)",
         "rerun with CUDA_LAUNCH_BLOCKING=1 to see the failing operation"),
        (),
    ),
    Entry(
        "device_mismatch",
        r"Expected all tensors to be on the same device",
        "tensors of one operation live on different devices",
        ("a model split over GPUs by device_map and an input left on the CPU or another GPU",
         "CUDA_VISIBLE_DEVICES changed between loading and running"),
        ("move inputs to the model's device (model.device) before calling it",
         "load the model on one GPU (gputui places each model on exactly one)"),
        ("mapping",),
    ),
    Entry(
        "fork_reinit",
        r"Cannot re-initialize CUDA in forked subprocess",
        "a forked child tried to use CUDA after the parent had initialised it",
        ("multiprocessing's default 'fork' start method copies a process whose CUDA state cannot be shared",),
        ("use multiprocessing.set_start_method('spawn') (gputui always spawns its workers)",),
        (),
    ),
    Entry(
        "invalid_ordinal",
        r"invalid device ordinal",
        "a GPU index that this process cannot see",
        ("CUDA_VISIBLE_DEVICES hides GPUs and renumbers the rest from 0",
         "nvidia-smi and CUDA number GPUs differently unless CUDA_DEVICE_ORDER=PCI_BUS_ID"),
        ("use the CUDA index shown by `gputui status` (column cuda), or name GPUs by UUID",),
        ("mapping",),
    ),
    Entry(
        "driver_insufficient",
        r"CUDA driver version is insufficient|driver version is insufficient for CUDA runtime",
        "the NVIDIA driver is older than the CUDA runtime torch was built with",
        ("a torch wheel built for a newer CUDA than the driver supports",),
        ("install a torch build for the driver's CUDA version, or update the driver",),
        ("driver",),
    ),
    Entry(
        "cublas_execution",
        r"CUBLAS_STATUS_EXECUTION_FAILED",
        "a cuBLAS kernel failed to run",
        ("an earlier asynchronous error (often a device-side assert or OOM) surfacing at the next matmul",
         "tensors with invalid strides or sizes for the chosen kernel"),
        ("rerun with CUDA_LAUNCH_BLOCKING=1 to find the real failing operation; end the poisoned process",),
        ("memory",),
    ),
)


def match(text: str) -> list[Entry]:
    return [e for e in CATALOGUE if e.matches(text)]
