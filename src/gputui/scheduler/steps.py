"""The lifecycle steps the scheduler's queue runs, one at a time: load (preflight from the
checkpoint's headers, a fresh worker, its stages, ready), unload (end the worker, check its memory
came back) and move (up on the target first, then the old worker ends).

Every wait is bounded: the preflight (PREFLIGHT_TIMEOUT_S), each load stage, and a worker that
goes quiet while loading (worker_handle.SILENCE_LIMIT_S).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gputui.api.views import ModelState
from gputui.core.checkpoint_info import CheckpointError
from gputui.core.estimate import Estimate
from gputui.core.placement import Placement, PlacementPolicy, PlacementRefused, choose_gpu, on_node
from gputui.core.requests import ModelRequest
from gputui.core.snapshot import ServerSnapshot
from gputui.hardware.base import GpuTelemetry
from gputui.scheduler import memory_checks
from gputui.scheduler.crash_watch import CrashWatch
from gputui.scheduler.launcher import WorkerLauncher
from gputui.scheduler.records import LoadTicket, ModelRecord, ModelTable, NotReady
from gputui.scheduler.worker_handle import WorkerFailed, WorkerHandle

LOAD_STAGE_TIMEOUT_S = 600.0
PREFLIGHT_TIMEOUT_S = 120.0  # headers on a hung network filesystem must not stop the queue


class Steps:
    def __init__(self, table: ModelTable, telemetry: GpuTelemetry, launcher: WorkerLauncher, policy: PlacementPolicy,
                 memory_return_timeout: float, default_keep_alive_s: float | None, crashes: CrashWatch,
                 evict_idle: bool = False) -> None:
        self.evict_idle = evict_idle  # the settings' evict = "idle"
        self.table, self.telemetry, self.launcher, self.policy = table, telemetry, launcher, policy
        self.memory_return_timeout = memory_return_timeout
        self.default_keep_alive_s = default_keep_alive_s
        self.crashes = crashes

    async def snapshot(self) -> ServerSnapshot:
        return await memory_checks.snapshot(self.telemetry)

    async def memory_returned(self, pid: int, placement: Placement) -> dict[str, Any]:
        return await memory_checks.wait_memory_returned(self.telemetry, pid, placement.uuids,
                                                        self.memory_return_timeout)

    # -- load ---------------------------------------------------------------------------

    async def load(self, request: ModelRequest, ticket: LoadTicket) -> ModelRecord:
        rec = self.table.models[request.name]
        if ticket.cancelled:
            return rec  # unloaded before its turn: the unload behind it settles the record
        if rec.state == ModelState.READY and rec.request == request:
            return rec  # already placed as asked
        if rec.state == ModelState.READY:
            raise PlacementRefused(f"{request.name} is already loaded; unload or move it first")
        started = time.monotonic()
        rec.error = None
        self.table.to(rec, ModelState.LOADING, "preflight")
        try:
            placement, est = await self._preflight_making_room(request)
        except (PlacementRefused, CheckpointError, OSError) as e:
            return self.fail(rec, f"refused at preflight: {e}")
        except Exception as e:  # noqa: BLE001 - a checker's bug must not leave the model at "preflight"
            return self.fail(rec, f"refused at preflight: {type(e).__name__}: {e}")
        rec.placement, rec.estimate = placement, est
        self.table.timeline.record("preflight_ok", rec.name, gpu=placement.gpu_index, uuid=placement.gpu_uuid,
                                   need_bytes=est.total_bytes, usable_bytes=placement.usable_bytes,
                                   **split_fields(placement))
        try:
            handle = await self.start_on(rec, placement, ticket=ticket)
        except WorkerFailed as e:
            return self.fail(rec, "load cancelled: unloaded while loading" if ticket.cancelled else str(e))
        rec.handle = handle
        rec.load_seconds = time.monotonic() - started
        rec.ready_since = time.time()
        self.table.to(rec, ModelState.READY, record={
            "gpu": placement.gpu_index, "pid": handle.pid, "predicted_bytes": rec.predicted_bytes,
            "measured_bytes": rec.measured_bytes, "seconds": round(rec.load_seconds, 3),
            "timings": rec.ready_report.get("timings")})
        return rec

    async def _preflight_making_room(self, request: ModelRequest) -> tuple[Placement, Estimate]:
        """The preflight; when it does not fit and evict = "idle", our own idle models are
        unloaded one at a time, least recently used first, and it is asked again - each one in
        the event log. Only where unloading could make room (a model too big for any GPU unloads
        nothing); never a pinned model, one answering a request, or another user's process."""
        while True:
            try:
                return await self.preflight(request)
            except PlacementRefused:
                victim = await self._idle_victim(request) if self.evict_idle else None
                if victim is None:
                    raise
            self.table.timeline.record("evicting", victim.name, for_model=request.name,
                                       idle_s=round(time.time() - _last_active(victim), 1))
            await self.unload(victim.name)

    async def _idle_victim(self, request: ModelRequest) -> ModelRecord | None:
        """The least recently used of our ready models whose unloading could let `request` fit:
        not pinned, not answering, not the one asked for, and on a GPU where placement - asked
        again with every such model gone, by its own rules (shared GPUs, never_touch, splits) -
        would put `request`."""
        idle = [r for r in self.table.models.values()
                if r.state == ModelState.READY and not r.request.pinned and not r.active_chats
                and r.name != request.name and r.placement is not None]
        if not idle:
            return None
        est, split = await self.launcher.read_costs(request, request.dtype_on(self.launcher.device))
        snap = on_node(await self.snapshot(), request.node)
        try:
            placement = choose_gpu(_without(snap, idle), est.total_bytes, request.gpus, self.policy,
                                   set(self.table.pids()), split)
        except PlacementRefused:
            return None  # not even with them all gone: unload nothing
        there = set(placement.uuids)
        helpful = [r for r in idle if r.placement is not None and there & set(r.placement.uuids)]
        return min(helpful, key=_last_active, default=None)

    async def preflight(self, request: ModelRequest) -> tuple[Placement, Estimate]:
        dtype = request.dtype_on(self.launcher.device)
        try:
            est, split = await asyncio.wait_for(self.launcher.read_costs(request, dtype), PREFLIGHT_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise CheckpointError(f"{request.path}: reading the checkpoint's headers took over "
                                  f"{PREFLIGHT_TIMEOUT_S:.0f} s (a hung network filesystem?)") from None
        snap = on_node(await self.snapshot(), request.node)
        placement = choose_gpu(snap, est.total_bytes, request.gpus, self.policy, set(self.table.pids()), split)
        return placement, est

    def _spec(self, rec: ModelRecord, placement: Placement) -> dict[str, Any]:
        r = rec.request
        # absolute(), not resolve(): on a cluster the path is read on the loading node, not here
        return {"name": r.name, "kind": r.kind, "path": str(Path(r.path).absolute()), "dtype": r.dtype,
                "max_context": r.max_context, "max_batch": r.max_batch, "device": self.launcher.device,
                "gpu_uuids": placement.uuids, "layer_split": placement.layer_split()}

    async def start_on(self, rec: ModelRecord, placement: Placement, mirror: ModelRecord | None = None,
                       ticket: LoadTicket | None = None) -> WorkerHandle:
        """Start a worker and load rec's model on `placement`; returns the ready handle.
        `mirror` (during a move) shows the new worker's stages on the serving record; `ticket`
        lets an unload kill the worker while it loads."""
        self.table.stage(rec, "starting_worker")
        before = await self.snapshot()
        handle = await self.launcher.start_worker(rec.request.kind, placement.uuids)
        self.table.timeline.record("worker_started", rec.name, pid=handle.pid, gpu=placement.gpu_index)
        if ticket is not None:
            ticket.handle = handle
            if ticket.cancelled:
                handle.kill()

        def on_stage(stage: str) -> None:
            self.table.stage(rec, stage)
            if mirror is not None:
                self.table.stage(mirror, f"moving: {stage}")
            self.table.timeline.record("stage", rec.name, stage=stage, pid=handle.pid)

        try:
            report = await handle.load(self._spec(rec, placement), on_stage, LOAD_STAGE_TIMEOUT_S)
        except WorkerFailed as e:
            handle.kill()
            await handle.exited.wait()
            after = await self.snapshot()
            raise WorkerFailed(memory_checks.contention_note(str(e), before, after, placement.uuids, handle.pid)) from None
        rec.ready_report = report
        for share in placement.shares:
            self.launcher.placed(handle, share.uuid, share.need_bytes)
        rec.measured_bytes = await memory_checks.held_bytes(self.telemetry, handle.pid, placement.uuids)
        self.crashes.watch(rec, handle)
        return handle

    def fail(self, rec: ModelRecord, message: str) -> ModelRecord:
        rec.error = message
        self.table.to(rec, ModelState.FAILED, record={"error": message})
        return rec

    # -- unload and move ----------------------------------------------------------------

    async def unload(self, name: str) -> dict[str, Any]:
        rec = self.table.models.get(name)
        if rec is None:
            raise KeyError(f"no model named {name!r}")
        handle, placement = rec.handle, rec.placement
        if handle is None or placement is None:
            self.table.to(rec, ModelState.UNLOADED)
            return {"returned": True, "returned_bytes": 0}
        self.table.to(rec, ModelState.UNLOADING)
        before = await self.snapshot()
        free_before = memory_checks.free_bytes(before, placement.uuids)
        t0 = time.monotonic()
        code = await handle.stop()
        result = await self.memory_returned(handle.pid, placement)
        free_after = result.get("free_bytes")
        returned = (free_after - free_before) if free_after is not None and free_before is not None else None
        result.update(returncode=code, seconds=round(time.monotonic() - t0, 3), returned_bytes=returned,
                      expected_bytes=rec.measured_bytes)
        rec.handle = None
        self.table.to(rec, ModelState.UNLOADED, record={"gpu": placement.gpu_index, "pid": handle.pid, **result})
        return result

    async def move(self, name: str, gpu: str) -> ModelRecord:
        """Bring the model up on `gpu`, then end the old worker. If the target fails, the
        source stays up and serving.

        The new worker reads the weights from the files (page cache), not from the old worker:
        measured on an H100, that read takes 0.4-0.5 s for ChatGLM3-6B inside a worker. Handing
        the tensors over by CUDA IPC copied them in 9 ms on one GPU, but across GPUs the new
        worker would have to open a CUDA context on the source GPU (538 MiB, for its whole
        life) - the kind of allocation on a busy GPU that gputui exists to avoid - to save at
        most those 0.5 s of a ~2.3 s load (bench/RESULTS.md, "Move")."""
        rec = self.table.models.get(name)
        if rec is None or rec.state != ModelState.READY or rec.handle is None or rec.placement is None:
            raise NotReady(f"{name} is not ready, so it cannot be moved")
        new_request = replace(rec.request, gpus=(gpu,), node=None)  # the GPU names its node
        old_handle, old_placement = rec.handle, rec.placement
        self.table.stage(rec, "preflight")
        try:
            placement, est = await self.preflight(new_request)
        except (PlacementRefused, CheckpointError) as e:
            self.table.stage(rec, "ready")
            raise PlacementRefused(f"move of {name} refused: {e}") from None
        staging = ModelRecord(new_request, placement=placement, estimate=est,
                              default_keep_alive_s=self.default_keep_alive_s)
        try:
            new_handle = await self.start_on(staging, placement, mirror=rec)
        except WorkerFailed as e:
            self.table.stage(rec, "ready")
            self.table.timeline.record("move_failed", name, error=str(e))
            raise
        rec.handle, rec.placement, rec.request = new_handle, placement, new_request
        rec.measured_bytes, rec.ready_report = staging.measured_bytes, staging.ready_report
        self.crashes.watch(rec, new_handle)
        self.table.stage(rec, "ready")
        await old_handle.stop()
        returned = await self.memory_returned(old_handle.pid, old_placement)
        self.table.timeline.record("moved", name, source=where(old_placement), target=where(placement), **returned)
        return rec

    async def end_all(self) -> None:
        """End every worker (gputui closing). An exit is an unload, logged as one, never a crash."""
        for rec in list(self.table.models.values()):
            handle = rec.handle
            if handle is not None:
                self.table.to(rec, ModelState.UNLOADING)
                code = await handle.stop(3.0)
                rec.handle = None
                self.table.to(rec, ModelState.UNLOADED,
                              record={"pid": handle.pid, "returncode": code, "reason": "gputui closed"})


def _without(snap: ServerSnapshot, gone: list[ModelRecord]) -> ServerSnapshot:
    """The GPUs as they would be with these models unloaded: their memory free, their workers gone."""
    gpus = []
    for g in snap.gpus:
        freed = sum(r.placement.need_on(g.uuid) for r in gone if r.placement is not None and g.uuid in r.placement.uuids)
        pids = {r.pid for r in gone}
        gpus.append(replace(g, free_bytes=(g.free_bytes or 0) + freed,
                            processes=tuple(p for p in g.processes if p.pid not in pids)))
    return replace(snap, gpus=tuple(gpus))


def _last_active(r: ModelRecord) -> float:
    return max(t for t in (r.ready_since, r.last_used, 0.0) if t is not None)


def split_fields(placement: Placement) -> dict[str, Any]:
    """Timeline fields of a split placement: every GPU, with its layers and need."""
    if not placement.split:
        return {}
    return {"gpus": [{"gpu": s.index, "uuid": s.uuid, "layers": list(s.layers or ()), "need_bytes": s.need_bytes}
                     for s in placement.shares]}


def where(placement: Placement) -> int | str:
    """A GPU index, or "0+1" for a split model."""
    return placement.label if placement.split else placement.gpu_index
