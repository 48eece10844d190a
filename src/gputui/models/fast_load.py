"""Reading safetensors shards onto a GPU fast: parallel reads into pinned buffers, overlapped
with host-to-device copies.

Plain `tensor.to("cuda")` from a memory-mapped file copies from pageable memory, one tensor
at a time (measured ~6 GiB/s through from_pretrained on an H100, while pinned host-to-device
runs at ~50 GiB/s). Here the data sections of all shards are read by several threads, in
chunks, into a small ring of pinned buffers, and each chunk is copied to one device buffer per
shard on side streams while the next chunks are read. One pool over all shards keeps the pipe
full: draining it at the end of every shard cost a quarter of the speed (H100, 12.49 GB:
17.8 GiB/s per shard, 21.3-23.2 GiB/s in one pool; bench/loader_variants.py). Tensors are then
views of those buffers: no second copy on the GPU and no full copy of the model on the host.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from gputui.core.checkpoint_info import read_safetensors_header

# Measured on the H100 machine (bench/loader_variants.py, one pool): 16 threads x 32 MiB chunks
# x 16 buffers 23.2 GiB/s from page cache; 16 x 16 x 32: 22.2; 24 x 32 x 24: 20.3; 32 x 8 x 64: 10.
CHUNK_BYTES = 32 << 20
RING = 16
THREADS = 16

_TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _data_start(file: Path) -> int:
    with open(file, "rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")


def pinned_ring(pinned: bool = True) -> list[torch.Tensor]:
    """Staging buffers, pinned for a GPU; made once per load (pinning costs ~0.1 s per 512 MiB)."""
    ring = [torch.empty(CHUNK_BYTES, dtype=torch.uint8) for _ in range(RING)]
    return [t.pin_memory() for t in ring] if pinned else ring


class _Ring:
    """Pinned slots handed to reader threads; a slot is free again once its copy has run."""

    def __init__(self, slots: list[torch.Tensor]) -> None:
        self.slots = slots
        self._free = list(range(len(slots)))
        self._events: list[torch.cuda.Event | None] = [None] * len(slots)
        self._cv = threading.Condition()

    def take(self) -> int:
        with self._cv:
            while True:
                for i in list(self._free):
                    ev = self._events[i]
                    if ev is None or ev.query():
                        self._free.remove(i)
                        return i
                self._cv.wait(0.0005)

    def give_back(self, i: int, ev: torch.cuda.Event | None) -> None:
        with self._cv:
            self._events[i] = ev
            self._free.append(i)
            self._cv.notify_all()


def read_shards_to_device(files: list[Path], device: torch.device) -> list[torch.Tensor]:
    """The whole data section of each shard, as one uint8 tensor per shard on `device`."""
    starts = [_data_start(f) for f in files]
    sizes = [f.stat().st_size - s for f, s in zip(files, starts, strict=True)]
    bufs = [torch.empty(n, dtype=torch.uint8, device=device) for n in sizes]
    jobs = [(i, off, min(CHUNK_BYTES, n - off)) for i, n in enumerate(sizes) for off in range(0, n, CHUNK_BYTES)]
    if not jobs:
        return bufs
    on_gpu = device.type == "cuda"  # the CPU runs the same chunking, copying in place (tests)
    ring = _Ring(pinned_ring(pinned=on_gpu))
    streams = [torch.cuda.Stream(device) for _ in range(2)] if on_gpu else []
    lock = threading.Lock()  # one thread at a time queues a copy and records its event
    fds = [os.open(f, os.O_RDONLY) for f in files]
    try:
        def job(j: tuple[int, int, int]) -> None:
            i, off, n = j
            slot = ring.take()
            view = memoryview(ring.slots[slot].numpy()).cast("B")[:n]
            got = 0
            while got < n:
                r = os.preadv(fds[i], [view[got:]], starts[i] + off + got)
                if r <= 0:
                    raise OSError(f"{files[i]}: short read at {off + got}")
                got += r
            if not on_gpu:
                bufs[i][off:off + n].copy_(ring.slots[slot][:n])
                ring.give_back(slot, None)
                return
            stream = streams[slot % 2]
            with lock, torch.cuda.stream(stream):
                bufs[i][off:off + n].copy_(ring.slots[slot][:n], non_blocking=True)
                ev = torch.cuda.Event()
                ev.record(stream)
            ring.give_back(slot, ev)

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(job, jobs))
        for st in streams:
            st.synchronize()
    finally:
        for fd in fds:
            os.close(fd)
    return bufs


def iter_device_tensors(files: list[Path], device: torch.device) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor on `device`) for every tensor, as views of one buffer per shard."""
    bufs = read_shards_to_device(files, device)
    for f, buf in zip(files, bufs, strict=True):
        for info in read_safetensors_header(f):  # offsets are relative to the data section
            dt = _TORCH_DTYPES[info.dtype]
            raw = buf[info.begin:info.begin + info.nbytes]
            if info.begin % dt.itemsize:  # unaligned (never seen in published files): copy
                raw = raw.clone()
            yield info.name, raw.view(dt).view(info.shape)
