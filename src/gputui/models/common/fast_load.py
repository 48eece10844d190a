"""Reading safetensors shards onto a GPU fast: parallel reads into pinned buffers, overlapped
with host-to-device copies.

Plain `tensor.to("cuda")` from a memory-mapped file copies from pageable memory, one tensor
at a time (measured ~6 GiB/s through from_pretrained on an H100, while pinned host-to-device
runs at ~50 GiB/s). Here the data sections of all shards are read by several threads, in
chunks, into a small ring of pinned buffers, and each chunk is copied to one device buffer per
shard (per run of tensors bound for one GPU, when a model is split) on side streams while the
next chunks are read. One pool over all shards keeps the pipe
full: draining it at the end of every shard cost a quarter of the speed (H100, 12.49 GB:
17.8 GiB/s per shard, 21.3-23.2 GiB/s in one pool; bench/loader_variants.py). Tensors are then
views of those buffers: no second copy on the GPU and no full copy of the model on the host.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from gputui.core.checkpoint_info import CheckpointError, TensorInfo, read_safetensors_header

# Measured on the H100 machine (bench/loader_variants.py, one pool): 16 threads x 32 MiB chunks
# x 16 buffers 23.2 GiB/s from page cache; 16 x 16 x 32: 22.2; 24 x 32 x 24: 20.3; 32 x 8 x 64: 10.
CHUNK_BYTES = 32 << 20
RING = 16
THREADS = 16

# safetensors dtype -> torch dtype, for every byte-sized dtype this torch has (the sub-byte
# ones, F4 and F6_*, have no tensor view: such a file is refused by name, see _torch_dtype)
_TORCH_DTYPES = {name: getattr(torch, attr) for name, attr in {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "C64": "complex64",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "BOOL": "bool",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu",
}.items() if hasattr(torch, attr)}


def _torch_dtype(info: TensorInfo) -> torch.dtype:
    try:
        return _TORCH_DTYPES[info.dtype]
    except KeyError:
        raise CheckpointError(f"{info.file}: tensor {info.name!r} is {info.dtype}, which this torch "
                              f"({torch.__version__}) cannot hold") from None


def _data_start(file: Path) -> int:
    with open(file, "rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")


def pinned_ring(pinned: bool = True) -> list[torch.Tensor]:
    """Staging buffers, pinned for a GPU; made once per load (pinning costs ~0.1 s per 512 MiB).
    A ring pinned ahead of time (pin_ring_ahead, during the cuBLAS warm-up) is used once."""
    global _ahead
    if pinned and _ahead is not None:
        ahead, _ahead = _ahead, None
        try:
            ring = ahead.result()
        except Exception:  # noqa: BLE001 - pinning again below raises it where it belongs
            ring = []
        if len(ring) == RING and all(t.numel() == CHUNK_BYTES for t in ring):
            return ring
    ring = [torch.empty(CHUNK_BYTES, dtype=torch.uint8) for _ in range(RING)]
    return [t.pin_memory() for t in ring] if pinned else ring


_ahead: Future[list[torch.Tensor]] | None = None


def pin_ring_ahead() -> None:
    """Pin the next load's staging ring on a thread now. The worker calls this as the cuBLAS
    warm-up starts: pinning is host memory only, so the fixed order (GPU state before weights)
    holds, and its cost leaves the weight load."""
    global _ahead
    if _ahead is None:
        _ahead = ThreadPoolExecutor(1, thread_name_prefix="gputui-pin").submit(pinned_ring)


def drop_ring_ahead() -> None:
    """Let go of a ring pinned ahead that the load did not use (e.g. transformers loaded)."""
    global _ahead
    _ahead = None


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


@dataclass(frozen=True)
class Segment:
    """A run of consecutive tensors in one shard that all go to one device: one device buffer."""

    file: int  # index into the shard list
    begin: int  # byte range within the shard's data section
    end: int
    device: torch.device


def plan_segments(headers: list[list[TensorInfo]], device_of: Callable[[str], torch.device]) -> list[Segment]:
    """Cut each shard's data section where the target device changes (one segment per shard
    when the model is on one device). Gaps between tensors, if any, are read along."""
    out: list[Segment] = []
    for i, infos in enumerate(headers):
        run: Segment | None = None
        for info in sorted(infos, key=lambda t: t.begin):
            dev = device_of(info.name)
            if run is not None and run.device == dev:
                run = Segment(i, run.begin, max(run.end, info.begin + info.nbytes), dev)
                continue
            if run is not None:
                out.append(run)
            run = Segment(i, info.begin, info.begin + info.nbytes, dev)
        if run is not None:
            out.append(run)
    return out


def read_segments_to_devices(files: list[Path], segments: list[Segment],
                             timings: dict[str, float] | None = None) -> list[torch.Tensor]:
    """Each segment's bytes, as one uint8 tensor on its device; `timings` gets where the time
    went (read_alloc_s, read_pin_s, read_copy_s)."""
    t0 = time.perf_counter()
    starts = [_data_start(f) for f in files]
    bufs = [torch.empty(s.end - s.begin, dtype=torch.uint8, device=s.device) for s in segments]
    jobs = [(k, off, min(CHUNK_BYTES, s.end - s.begin - off))
            for k, s in enumerate(segments) for off in range(0, s.end - s.begin, CHUNK_BYTES)]
    if not jobs:
        return bufs
    gpus = sorted({s.device for s in segments if s.device.type == "cuda"}, key=str)
    t1 = time.perf_counter()
    ring = _Ring(pinned_ring(pinned=bool(gpus)))  # the CPU runs the same chunking (tests)
    t2 = time.perf_counter()
    streams = {d: [torch.cuda.Stream(d) for _ in range(2)] for d in gpus}
    lock = threading.Lock()  # one thread at a time queues a copy and records its event
    fds = [os.open(f, os.O_RDONLY) for f in files]
    try:
        def job(j: tuple[int, int, int]) -> None:
            k, off, n = j
            seg = segments[k]
            slot = ring.take()
            view = ring.slots[slot].numpy().data.cast("B")[:n]
            got = 0
            while got < n:
                r = os.preadv(fds[seg.file], [view[got:]], starts[seg.file] + seg.begin + off + got)
                if r <= 0:
                    raise OSError(f"{files[seg.file]}: short read at {seg.begin + off + got}")
                got += r
            if seg.device.type != "cuda":
                bufs[k][off:off + n].copy_(ring.slots[slot][:n])
                ring.give_back(slot, None)
                return
            stream = streams[seg.device][slot % 2]
            with lock, torch.cuda.stream(stream):
                bufs[k][off:off + n].copy_(ring.slots[slot][:n], non_blocking=True)
                ev = torch.cuda.Event()
                ev.record(stream)
            ring.give_back(slot, ev)

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(job, jobs))
        for pair in streams.values():
            for st in pair:
                st.synchronize()
    finally:
        for fd in fds:
            os.close(fd)
    if timings is not None:
        timings.update(read_alloc_s=t1 - t0, read_pin_s=t2 - t1, read_copy_s=time.perf_counter() - t2)
    return bufs


def read_shards_to_device(files: list[Path], device: torch.device) -> list[torch.Tensor]:
    """The whole data section of each shard, as one uint8 tensor per shard on `device`."""
    sizes = [f.stat().st_size - _data_start(f) for f in files]
    return read_segments_to_devices(files, [Segment(i, 0, n, device) for i, n in enumerate(sizes)])


def read_tensors(files: list[Path], device_of: Callable[[str], torch.device] | torch.device,
                 timings: dict[str, float] | None = None) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor on its device) for every tensor, as views of one buffer per segment, all
    copies done. `device_of`: one device for all, or a function of the tensor's name (a split
    model). `timings` gets read_s, read_gib_s and the parts of read_segments_to_devices."""
    t0 = time.perf_counter()
    headers = [read_safetensors_header(f) for f in files]
    where = {info.name: device_of if isinstance(device_of, torch.device) else device_of(info.name)
             for infos in headers for info in infos}
    segments = plan_segments(headers, where.__getitem__)
    bufs = read_segments_to_devices(files, segments, timings)
    out = []
    for seg, buf in zip(segments, bufs, strict=True):
        for info in headers[seg.file]:  # offsets are relative to the data section
            if not seg.begin <= info.begin < seg.end or where[info.name] != seg.device:
                continue
            dt = _torch_dtype(info)
            raw = buf[info.begin - seg.begin:info.begin - seg.begin + info.nbytes]
            if (info.begin - seg.begin) % dt.itemsize:  # unaligned (never seen in published files): copy
                raw = raw.clone()
            out.append((info.name, raw.view(dt).view(info.shape)))
    if timings is not None:
        timings["read_s"] = time.perf_counter() - t0
        timings["read_gib_s"] = sum(t.numel() * t.element_size() for _, t in out) / 2**30 / timings["read_s"]
    return out
