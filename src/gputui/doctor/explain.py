"""Explain an error message from the live GPU state: which GPU, how full, who holds it, what to do."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from gputui.core.memory import CUBLAS_CREATE_MIN_FREE_BYTES, NEW_PROCESS_FIRST_MATMUL_BYTES
from gputui.core.snapshot import GpuSnapshot, ServerSnapshot
from gputui.core.units import human_bytes, mib
from gputui.doctor.catalogue import Entry, match


@dataclass
class Explanation:
    error: str
    entries: list[Entry]
    evidence: list[str] = field(default_factory=list)
    suspects: list[int] = field(default_factory=list)  # NVML indices of the GPUs involved

    def to_json(self) -> dict[str, Any]:
        return {
            "recognised": bool(self.entries),
            "matches": [{"id": e.id, "title": e.title, "causes": list(e.causes), "fixes": list(e.fixes)}
                        for e in self.entries],
            "evidence": self.evidence,
            "gpus": self.suspects,
        }

    def text(self) -> str:
        if not self.entries:
            return ("not a known CUDA/cuBLAS error; run `gputui doctor` for a check of this machine\n"
                    + "\n".join(f"  - {e}" for e in self.evidence))
        out = []
        for e in self.entries:
            out.append(f"{e.title}  [{e.id}]")
            out += [f"  cause: {c}" for c in e.causes]
        if self.evidence:
            out.append("on this machine now:")
            out += [f"  - {line}" for line in self.evidence]
        out.append("fix:")
        for e in self.entries:
            out += [f"  - {f}" for f in e.fixes]
        return "\n".join(out)


def gpus_named_in(text: str, snap: ServerSnapshot) -> list[GpuSnapshot]:
    """GPUs the error text points at: 'GPU 1', 'cuda:1', 'device 1' (CUDA numbering), or a UUID."""
    found: list[GpuSnapshot] = []
    for m in re.finditer(r"GPU-[0-9a-fA-F-]{8,}", text):
        g = snap.gpu(m.group(0))
        if g is not None and g not in found:
            found.append(g)
    for m in re.finditer(r"(?:cuda:|GPU |device )(\d+)", text):
        idx = int(m.group(1))
        g = next((x for x in snap.gpus if x.cuda_index_pci == idx), None) or snap.gpu(idx)
        if g is not None and g not in found:
            found.append(g)
    return found


def explain(text: str, snap: ServerSnapshot | None) -> Explanation:
    entries = match(text)
    ex = Explanation(text, entries)
    if snap is None or (snap.error and not snap.gpus):
        ex.evidence.append("GPU state unavailable (no NVML): the explanation is generic")
        return ex
    live = {k for e in entries for k in e.live}
    named = gpus_named_in(text, snap)
    if "headroom" in live:
        tight = [g for g in snap.gpus if g.error is None and (g.free_bytes or 0) < NEW_PROCESS_FIRST_MATMUL_BYTES]
        for g in tight + [g for g in named if g not in tight]:
            ex.evidence.append(
                f"GPU {g.index} ({g.uuid}) has {mib(g.free_bytes)} free; a new process needs about "
                f"{mib(NEW_PROCESS_FIRST_MATMUL_BYTES)} for its context and first cuBLAS call, and cublasCreate "
                f"itself fails below about {mib(CUBLAS_CREATE_MIN_FREE_BYTES)}"
            )
            ex.suspects.append(g.index)
            roomy = [x for x in snap.gpus if x.error is None and x.index != g.index
                     and (x.free_bytes or 0) > NEW_PROCESS_FIRST_MATMUL_BYTES]
            where = f"load it with gputui on GPU {roomy[0].index}" if roomy else "load it with gputui elsewhere"
            ex.evidence.append(
                f"the process that failed was probably the second model that device_map='auto' spread over "
                f"GPU {g.index}, or one squeezed by another process there; {where} or free GPU {g.index}"
            )
        if not tight:
            ex.evidence.append("no GPU is that full right now: the memory was taken at the time of the error "
                               "(a load in progress, or another process that has since exited)")
    if "memory" in live or "headroom" in live:
        for g in (named or [g for g in snap.gpus if g.error is None]):
            holders = ", ".join(f"pid {p.pid} {p.user or '?'} {human_bytes(p.used_bytes)}" for p in g.processes[:5])
            ex.evidence.append(f"GPU {g.index}: {mib(g.used_bytes)} used of {mib(g.total_bytes)}"
                               + (f"; held by {holders}" if holders else "; no processes"))
            if g.index not in ex.suspects and named:
                ex.suspects.append(g.index)
    if "mapping" in live:
        env = os.environ
        ex.evidence.append(f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '(unset)')} "
                           f"CUDA_DEVICE_ORDER={env.get('CUDA_DEVICE_ORDER', '(unset: FASTEST_FIRST)')}")
        for g in snap.gpus:
            ex.evidence.append(f"nvidia-smi GPU {g.index} = cuda:{g.cuda_index_pci} under PCI_BUS_ID, "
                               f"cuda:{g.cuda_index_default} under the default order")
    if "driver" in live:
        ex.evidence.append(f"driver {snap.driver_version} supports CUDA up to {snap.cuda_driver_version}")
    return ex
