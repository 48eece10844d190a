"""What NVML says about our workers' memory: how much one holds, whether it came back after
an exit, and who else grew on our GPUs while we loaded. Every function takes the GPUs a model
uses (one, or several for a split model) and reads them together."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gputui.core.snapshot import ServerSnapshot
from gputui.core.units import human_bytes
from gputui.hardware.base import GpuTelemetry

NVML_TIMEOUT_S = 20.0  # a hung NVML call (a sick GPU) must not stop the scheduler's queue


async def snapshot(telemetry: GpuTelemetry) -> ServerSnapshot:
    try:
        return await asyncio.wait_for(asyncio.to_thread(telemetry.snapshot), NVML_TIMEOUT_S)
    except asyncio.TimeoutError:
        return ServerSnapshot(time.time(), telemetry.backend, error=f"NVML did not answer within {NVML_TIMEOUT_S:.0f} s")


def free_bytes(snap: ServerSnapshot, uuids: list[str]) -> int | None:
    """The GPUs' free memory summed (None if any of them cannot tell)."""
    free = [g.free_bytes if g is not None else None for g in (snap.gpu(u) for u in uuids)]
    return None if None in free else sum(f for f in free if f is not None)


async def held_bytes(telemetry: GpuTelemetry, pid: int, uuids: list[str]) -> int | None:
    """What `pid` holds, summed over its GPUs (None if NVML cannot tell)."""
    snap = await snapshot(telemetry)
    total = 0
    for uuid in uuids:
        g = snap.gpu(uuid)
        held = [p.used_bytes for p in g.processes if p.pid == pid] if g is not None else []
        if not held or held[0] is None:
            return None
        total += held[0]
    return total


def contention_note(message: str, before: ServerSnapshot, after: ServerSnapshot, uuids: list[str],
                    our_pid: int) -> str:
    """If another process grew on our GPU(s) while we loaded, say who (fault: contention)."""
    notes = []
    for uuid in uuids:
        g0, g1 = before.gpu(uuid), after.gpu(uuid)
        if g0 is None or g1 is None:
            continue
        old = {p.pid: p.used_bytes or 0 for p in g0.processes}
        grown = [(p.pid, p.user, (p.used_bytes or 0) - old.get(p.pid, 0)) for p in g1.processes
                 if p.pid != our_pid and (p.used_bytes or 0) - old.get(p.pid, 0) > 0]
        if grown:
            who = ", ".join(f"pid {pid} ({user or '?'}) +{human_bytes(n)}" for pid, user, n in grown)
            notes.append(f"contention on GPU {g1.index} since preflight: {who}")
    return "; ".join([message, *notes])


async def wait_memory_returned(telemetry: GpuTelemetry, pid: int, uuids: list[str], timeout: float) -> dict[str, Any]:
    """Poll NVML until `pid` holds nothing on any of `uuids` (or `timeout` seconds pass).
    free_bytes: the GPUs' free memory summed, once it is all back."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        snap = await snapshot(telemetry)
        still = [p for g in (snap.gpu(u) for u in uuids) if g is not None for p in g.processes if p.pid == pid]
        if not still:
            return {"returned": True, "seconds": round(time.monotonic() - t0, 3), "free_bytes": free_bytes(snap, uuids)}
        if time.monotonic() > deadline:
            return {"returned": False, "seconds": round(time.monotonic() - t0, 3),
                    "still_held_bytes": sum(p.used_bytes or 0 for p in still)}
        await asyncio.sleep(0.05)
