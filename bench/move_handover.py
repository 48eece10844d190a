#!/usr/bin/env python3
"""Move a model's weights to a new worker: reload from page cache, or hand the GPU tensors
over from the old worker through CUDA IPC? (device only)

python bench/move_handover.py CHATGLM3_DIR. The parent stands for the old worker (weights on
the GPU as the fast loader leaves them: one buffer per shard); a spawned child stands for the
new one and times both ways of getting its own copy. On one GPU the handover copy is
device-to-device inside one GPU; across two GPUs it would run at the peer link's speed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp


def child(q_in: mp.Queue, q_out: mp.Queue, files: list[str]) -> None:
    from gputui.models.fast_load import read_shards_to_device

    dev = torch.device("cuda:0")
    torch.ones(1, device=dev)
    t = time.perf_counter()
    bufs = q_in.get()  # opens the IPC handles
    opened = time.perf_counter() - t
    t = time.perf_counter()
    mine = [b.clone() for b in bufs]
    torch.cuda.synchronize()
    copy = time.perf_counter() - t
    nbytes = sum(b.numel() for b in mine)
    same = all(torch.equal(a, b) for a, b in zip(mine, bufs, strict=True))
    del bufs, mine
    torch.cuda.empty_cache()
    t = time.perf_counter()
    reread = read_shards_to_device([Path(f) for f in files], dev)
    torch.cuda.synchronize()
    reload_s = time.perf_counter() - t
    q_out.put({"bytes": nbytes, "ipc_open_s": round(opened, 4), "handover_copy_s": round(copy, 4),
               "handover_GiB_s": round(nbytes / copy / 2**30, 1), "copy_identical": same,
               "reload_page_cache_s": round(reload_s, 3), "reload_GiB_s": round(nbytes / reload_s / 2**30, 1)})
    del reread


def main() -> None:
    from gputui.core.checkpoint_info import weight_files
    from gputui.models.fast_load import read_shards_to_device

    files = [str(f) for f in weight_files(Path(sys.argv[1]))[1]]
    dev = torch.device("cuda:0")
    bufs = read_shards_to_device([Path(f) for f in files], dev)  # also warms the page cache
    torch.cuda.synchronize()
    ctx = mp.get_context("spawn")
    q_in, q_out = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=child, args=(q_in, q_out, files))
    p.start()
    q_in.put(bufs)
    print(json.dumps({"step": "move_handover_vs_reload", **q_out.get(timeout=300)}), flush=True)
    p.join()


if __name__ == "__main__":
    main()
