"""Weights from the page cache to the GPU: GiB/s of the plain per-tensor path and of our
pinned-ring loader (models/common/fast_load.py) as the workers use it."""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import checkpoints, say


async def run(args: argparse.Namespace) -> None:
    import torch

    from gputui.core.checkpoint_info import weight_files
    from gputui.models.common import fast_load
    from gputui.models.common.weights import iter_tensors

    path = checkpoints(args.root) / "chatglm3-6b"
    files = weight_files(path)[1]
    total = sum(f.stat().st_size for f in files)
    for f in files:  # into the page cache
        f.read_bytes()

    def gib_s(fn: Any) -> float:
        torch.cuda.synchronize()
        t = time.perf_counter()
        keep = fn()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
        del keep
        torch.cuda.empty_cache()
        return round(total / dt / (1 << 30), 2)

    say(step="loader", path="pageable per tensor", bytes=total, gib_s=gib_s(lambda: [t.to("cuda") for _, t in iter_tensors(path)]))
    for _ in range(2):
        timings: dict[str, float] = {}
        rate = gib_s(lambda timings=timings: list(fast_load.read_tensors(files, torch.device("cuda"), timings)))
        say(step="loader", path="pinned ring (gputui)", bytes=total, gib_s=rate,
            threads=fast_load.THREADS, chunk_mib=fast_load.CHUNK_BYTES >> 20, ring=fast_load.RING, timings=timings)
