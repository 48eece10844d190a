#!/usr/bin/env python3
"""Toward 20 GiB/s from page cache (device only): the shipped loader with other thread / chunk /
ring sizes. (Runs 9-10 measured the one-pool design as a separate copy of the pipeline here,
and checked its bytes were identical to the per-shard loader's, before it replaced that one.) (Run 9 also tried pinning the page cache itself,
cudaHostRegister of the read-only memory-mapped file: the driver refused every registration.)

python bench/loader_variants.py CHATGLM3_DIR   prints JSON lines (GiB/s; best of 3).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from gputui.core.checkpoint_info import weight_files
from gputui.models import fast_load

dev = torch.device("cuda:0")
files = weight_files(Path(sys.argv[1]))[1]
sizes = [f.stat().st_size - fast_load._data_start(f) for f in files]
total = sum(sizes)
for f in files:
    f.read_bytes()  # page cache warm


def one_pool(threads: int, chunk_mib: int, ring_n: int) -> list[torch.Tensor]:
    """The shipped loader (one pool over all shards) with other sizes."""
    saved = fast_load.THREADS, fast_load.CHUNK_BYTES, fast_load.RING
    fast_load.THREADS, fast_load.CHUNK_BYTES, fast_load.RING = threads, chunk_mib << 20, ring_n
    try:
        return fast_load.read_shards_to_device(files, dev)
    finally:
        fast_load.THREADS, fast_load.CHUNK_BYTES, fast_load.RING = saved


def current() -> list[torch.Tensor]:
    return fast_load.read_shards_to_device(files, dev)


def best(label: str, fn) -> None:  # noqa: ANN001
    rates = []
    try:
        for _ in range(3):
            torch.cuda.synchronize()
            t = time.perf_counter()
            out = fn()
            torch.cuda.synchronize()
            rates.append(total / (time.perf_counter() - t) / 2**30)
            del out
            torch.cuda.empty_cache()
        print(json.dumps({"variant": label, "GiB_s_best": round(max(rates), 1), "all": [round(r, 1) for r in rates]}), flush=True)
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"variant": label, "error": f"{type(e).__name__}: {e}"[:300]}), flush=True)


best("fast_load as shipped (one pool, 16 x 32 MiB x 16)", current)
for t, c, r in ((16, 32, 16), (16, 16, 32), (24, 32, 24), (32, 8, 64)):
    best(f"one pool t{t} c{c} r{r}", lambda t=t, c=c, r=r: one_pool(t, c, r))

