"""Reading safetensors shards onto a GPU fast: parallel reads into pinned buffers, overlapped
with host-to-device copies.

Plain `tensor.to("cuda")` from a memory-mapped file copies from pageable memory, one tensor
at a time (measured ~6 GiB/s through from_pretrained on an H100, while pinned host-to-device
runs at ~50 GiB/s). Here each shard's data section is read by several threads, in chunks,
into a small ring of pinned buffers, and each chunk is copied to one device buffer per shard
on a side stream while the next chunks are read. Tensors are then views of that buffer: no
second copy on the GPU and no full copy of the model on the host.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from gputui.core.checkpoint_info import read_safetensors_header

# Measured on the H100 machine (bench/loader_bench.py): 16 threads x 32 MiB chunks x 16 buffers
# gave 16.1 GiB/s from page cache; 8 x 64 MiB x 8 gave 11.9; plain .to('cuda') 5.7.
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


def pinned_ring() -> list[torch.Tensor]:
    """Pinned staging buffers; made once per load (pinning costs ~0.1 s per 512 MiB)."""
    return [torch.empty(CHUNK_BYTES, dtype=torch.uint8).pin_memory() for _ in range(RING)]


def read_shard_to_device(file: Path, device: torch.device, ring: list[torch.Tensor]) -> torch.Tensor:
    """The whole data section of one shard, as a uint8 tensor on `device`."""
    start = _data_start(file)
    size = file.stat().st_size - start
    dev_buf = torch.empty(size, dtype=torch.uint8, device=device)
    if size == 0:
        return dev_buf
    free_slots: list[int] = list(range(RING))
    slot_events: list[torch.cuda.Event | None] = [None] * RING
    cv = threading.Condition()
    stream = torch.cuda.Stream(device)
    fd = os.open(file, os.O_RDONLY)
    try:
        chunks = [(off, min(CHUNK_BYTES, size - off)) for off in range(0, size, CHUNK_BYTES)]

        def take_slot() -> int:
            with cv:
                while True:
                    for i in list(free_slots):
                        ev = slot_events[i]
                        if ev is None or ev.query():
                            free_slots.remove(i)
                            return i
                    cv.wait(0.001)

        def job(chunk: tuple[int, int]) -> None:
            off, n = chunk
            slot = take_slot()
            view = memoryview(ring[slot].numpy()).cast("B")[:n]
            got = 0
            while got < n:
                r = os.preadv(fd, [view[got:]], start + off + got)
                if r <= 0:
                    raise OSError(f"{file}: short read at {off + got}")
                got += r
            with cv:
                with torch.cuda.stream(stream):
                    dev_buf[off:off + n].copy_(ring[slot][:n], non_blocking=True)
                    ev = torch.cuda.Event()
                    ev.record(stream)
                slot_events[slot] = ev
                free_slots.append(slot)
                cv.notify_all()

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(job, chunks))
        stream.synchronize()
    finally:
        os.close(fd)
    return dev_buf


def iter_device_tensors(files: list[Path], device: torch.device) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor on `device`) for every tensor, as views of one buffer per shard."""
    ring = pinned_ring()
    for f in files:
        infos = read_safetensors_header(f)
        buf = read_shard_to_device(f, device, ring)
        for info in infos:  # offsets are relative to the data section, which buf holds exactly
            dt = _TORCH_DTYPES[info.dtype]
            raw = buf[info.begin:info.begin + info.nbytes]
            if info.begin % dt.itemsize:  # unaligned (never seen in published files): copy
                raw = raw.clone()
            yield info.name, raw.view(dt).view(info.shape)
        del buf
