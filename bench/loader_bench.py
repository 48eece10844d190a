#!/usr/bin/env python3
"""Weights from page cache to the GPU: GiB/s of the loaders (device only)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from gputui.core.checkpoint_info import weight_files
from gputui.models import fast_load
from gputui.models.weights import iter_tensors

path = Path(sys.argv[1])
files = weight_files(path)[1]
total = sum(f.stat().st_size for f in files)
for f in files:  # page cache warm
    f.read_bytes()


def gib_s(fn) -> float:  # type: ignore[no-untyped-def]
    torch.cuda.synchronize()
    t = time.perf_counter()
    keep = fn()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    del keep
    torch.cuda.empty_cache()
    return total / dt / (1 << 30)


res = {"bytes": total}
res["pageable_per_tensor"] = gib_s(lambda: [t.to("cuda") for _, t in iter_tensors(path)])
for threads, chunk, ring in ((8, 64, 8), (16, 64, 16), (16, 32, 16), (32, 16, 32), (8, 256, 4)):
    fast_load.THREADS, fast_load.CHUNK_BYTES, fast_load.RING = threads, chunk << 20, ring
    res[f"pinned_t{threads}_c{chunk}_r{ring}"] = gib_s(lambda: list(fast_load.read_tensors(files, torch.device("cuda"))))
print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in res.items()}))
