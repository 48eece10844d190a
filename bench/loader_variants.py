#!/usr/bin/env python3
"""Toward 20 GiB/s from page cache (device only): the shipped loader against one pool over all
shards with other thread / chunk / ring sizes. (Run 9 also tried pinning the page cache itself,
cudaHostRegister of the read-only memory-mapped file: the driver refused every registration.)

python bench/loader_variants.py CHATGLM3_DIR   prints JSON lines (GiB/s; best of 3).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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
    """All shards' chunks through one pool and one ring (no drain between shards)."""
    chunk = chunk_mib << 20
    ring = [torch.empty(chunk, dtype=torch.uint8).pin_memory() for _ in range(ring_n)]
    bufs = [torch.empty(n, dtype=torch.uint8, device=dev) for n in sizes]
    fds = [os.open(f, os.O_RDONLY) for f in files]
    starts = [fast_load._data_start(f) for f in files]
    jobs = [(i, off, min(chunk, n - off)) for i, n in enumerate(sizes) for off in range(0, n, chunk)]
    free = list(range(ring_n))
    events: list[torch.cuda.Event | None] = [None] * ring_n
    cv = threading.Condition()
    streams = [torch.cuda.Stream(dev) for _ in range(2)]

    def take() -> int:
        with cv:
            while True:
                for s in list(free):
                    ev = events[s]
                    if ev is None or ev.query():
                        free.remove(s)
                        return s
                cv.wait(0.0005)

    def job(j: tuple[int, int, int]) -> None:
        i, off, n = j
        s = take()
        view = memoryview(ring[s].numpy()).cast("B")[:n]
        got = 0
        while got < n:
            got += os.preadv(fds[i], [view[got:]], starts[i] + off + got)
        st = streams[s % 2]
        with cv:
            with torch.cuda.stream(st):
                bufs[i][off:off + n].copy_(ring[s][:n], non_blocking=True)
                ev = torch.cuda.Event()
                ev.record(st)
            events[s] = ev
            free.append(s)
            cv.notify_all()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(job, jobs))
    torch.cuda.synchronize()
    for fd in fds:
        os.close(fd)
    return bufs


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

ref = current()
for label, fn in (("one pool", lambda: one_pool(16, 32, 16)),):
    try:
        got = fn()
        print(json.dumps({"check": label, "identical_to_current": all(torch.equal(a, b) for a, b in zip(ref, got, strict=True))}))
        del got
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"check": label, "error": str(e)[:200]}))
