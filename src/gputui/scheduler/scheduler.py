"""The scheduler: lifecycle commands strictly one at a time, chat to ready models alongside.

A single consumer task takes commands (load, unload, move, reload) from one queue in arrival
order. Chat requests go straight to a ready model's worker and never wait behind that queue.
A worker that dies at any time turns its model to `crashed`, its memory is checked back, and
everything else carries on.

One loop owns the state: every record is changed by this class, on the loop it runs on. What
other threads (the dashboard's poll) and clients read are immutable snapshots - a ModelView per
model and the pid map, both replaced whole on every change - and the one numbered event stream
(events.py) that carries every change and every lifecycle record.

Every wait is bounded: the preflight (PREFLIGHT_TIMEOUT_S), each load stage, and a worker that
goes quiet while loading (worker_handle.SILENCE_LIMIT_S). An unload always works: an unload of a
model that is still queued or loading cancels that load and kills its worker at once, without
waiting for its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gputui.api.client import CommandRefused
from gputui.api.views import ModelState, ModelView
from gputui.core.checkpoint_info import CheckpointError
from gputui.core.estimate import Estimate
from gputui.core.placement import Placement, PlacementPolicy, PlacementRefused, choose_gpu, on_node
from gputui.core.profiles import NAME_RE
from gputui.core.requests import ModelRequest, effective_keep_alive
from gputui.core.snapshot import ServerSnapshot
from gputui.hardware.base import GpuTelemetry
from gputui.scheduler import memory_checks
from gputui.scheduler.events import EventLog
from gputui.scheduler.launcher import WorkerLauncher
from gputui.scheduler.timeline import Timeline
from gputui.scheduler.worker_handle import WorkerFailed, WorkerHandle

LOAD_STAGE_TIMEOUT_S = 600.0
PREFLIGHT_TIMEOUT_S = 120.0  # headers on a hung network filesystem must not stop the queue
MEMORY_RETURN_TIMEOUT_S = 30.0
MAX_POISON_RESTARTS = 3
KEEP_ALIVE_TICK_S = 1.0
DEFAULT_POLICY = PlacementPolicy()


@dataclass
class ModelRecord:
    request: ModelRequest
    state: str = "queued"  # queued, loading, ready, unloading, unloaded, failed, crashed
    stage: str = "queued"
    placement: Placement | None = None
    estimate: Estimate | None = None
    measured_bytes: int | None = None
    error: str | None = None
    handle: WorkerHandle | None = None
    ready_report: dict[str, Any] = field(default_factory=dict)
    load_seconds: float | None = None
    restarts: int = 0  # automatic restarts after a device-side assert
    ready_since: float | None = None  # wall clock
    last_used: float | None = None  # wall clock of the last chat request's start or end
    active_chats: int = 0  # replies streaming now (a model is never idle-unloaded mid-reply)
    state_since: float = field(default_factory=time.time)  # wall clock of the last change of state
    default_keep_alive_s: float | None = None  # the server's, for a request that says none

    @property
    def keep_alive_s(self) -> float | None:
        return effective_keep_alive(self.request.keep_alive_s, self.default_keep_alive_s)

    @property
    def name(self) -> str:
        return self.request.name

    @property
    def predicted_bytes(self) -> int | None:
        """The preflight's estimate: the sum of its GPUs' shares (for a split model each has its
        own context and workspace; for one GPU it is the estimate itself)."""
        if self.placement is not None:
            return sum(s.need_bytes for s in self.placement.shares)
        return self.estimate.total_bytes if self.estimate is not None else None

    @property
    def pid(self) -> int | None:
        return self.handle.pid if self.handle is not None and self.handle.alive else None

    def view(self) -> ModelView:
        return ModelView(self.request, ModelState(self.state), self.stage,
                         self.placement.shares if self.placement is not None else (), self.predicted_bytes,
                         self.measured_bytes, self.pid, self.error, self.load_seconds, self.ready_since,
                         self.last_used, self.restarts, dict(self.ready_report.get("runtime") or {}),
                         dict(self.ready_report.get("timings") or {}), self.keep_alive_s, self.state_since)


class NotReady(CommandRefused):
    """A chat (or move) to a model that cannot answer now; the message says why."""


@dataclass
class _LoadTicket:
    """One submitted load, so an unload can cancel it: before it starts, or by killing its worker."""

    cancelled: bool = False
    handle: WorkerHandle | None = None


@dataclass
class _Job:
    kind: str
    name: str
    run: Callable[[], Awaitable[Any]]
    done: asyncio.Future[Any]


class Scheduler:
    def __init__(
        self,
        telemetry: GpuTelemetry,
        launcher: WorkerLauncher,
        *,
        policy: PlacementPolicy = DEFAULT_POLICY,
        timeline: Timeline | None = None,
        memory_return_timeout: float = MEMORY_RETURN_TIMEOUT_S,
        default_keep_alive_s: float | None = None,
    ) -> None:
        self.telemetry = telemetry
        self.launcher = launcher
        self.policy = policy
        self.timeline = timeline or Timeline()
        self.memory_return_timeout = memory_return_timeout
        self.default_keep_alive_s = default_keep_alive_s  # settings keep_alive; None: forever
        self.models: dict[str, ModelRecord] = {}  # the loop's own; others read views()
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[ModelView], None]] = []
        self._watchers: set[asyncio.Task[None]] = set()
        self._tickets: dict[str, list[_LoadTicket]] = {}
        self._unloads_queued: dict[str, int] = {}  # name -> unloads submitted, not yet done
        self.crashes_in_hand = 0  # watchers between a worker's exit and their memory check
        self._views: Mapping[str, ModelView] = MappingProxyType({})
        self._pids: Mapping[int, str] = MappingProxyType({})
        self.events = EventLog(lambda: [v.to_json() for v in self._views.values()])
        self.timeline.subscribe(self._timeline_event)

    # -- plumbing -----------------------------------------------------------------------

    def _timeline_event(self, record: dict[str, Any]) -> None:
        self.events.emit("timeline", record.get("model"), record)

    def subscribe(self, fn: Callable[[ModelView], None]) -> None:
        """Call `fn` with a model's new view on every change (on the loop; for in-process
        listeners - a client follows `events` instead)."""
        self._listeners.append(fn)

    def _changed(self, rec: ModelRecord) -> None:
        view = rec.view()
        # replaced whole, never changed in place: a reader on another thread sees before or after
        self._views = MappingProxyType({**self._views, rec.name: view})
        self._pids = MappingProxyType({r.pid: r.name for r in self.models.values() if r.pid is not None})
        self.events.emit("model", rec.name, view.to_json())
        for fn in list(self._listeners):
            fn(view)

    def views(self) -> list[ModelView]:
        """Every model as it is now (safe from any thread)."""
        return list(self._views.values())

    def view(self, name: str) -> ModelView | None:
        return self._views.get(name)

    def start(self) -> None:
        if self._consumer is None:
            self._consumer = asyncio.create_task(self._consume(), name="gputui-scheduler")
            self._keeper = asyncio.create_task(self._keep_alive(), name="gputui-keep-alive")

    async def _keep_alive(self) -> None:
        """Unload a model its keep_alive has outlived, unused (as Ollama does); the event log says
        why. Checked every KEEP_ALIVE_TICK_S, and again when the unload's turn in the queue
        comes: a reply that started meanwhile (behind a long load, say) keeps the model."""
        while True:
            await asyncio.sleep(KEEP_ALIVE_TICK_S)
            for rec in list(self.models.values()):
                if self._idle_past_keep_alive(rec) is not None and rec.name not in self._unloads_queued:
                    self._unloads_queued[rec.name] = self._unloads_queued.get(rec.name, 0) + 1
                    self._submit("idle_unload", rec.name, functools.partial(self._do_idle_unload, rec.name))

    def _idle_past_keep_alive(self, rec: ModelRecord) -> float | None:
        """How long `rec` has been idle, if that is past its keep_alive and nothing uses or
        changes it; None otherwise."""
        keep = rec.keep_alive_s
        if keep is None or rec.state != "ready" or rec.active_chats or self._tickets.get(rec.name):
            return None
        if keep == 0 and rec.last_used is None:
            return None  # 0: unloaded once a reply ends; it has not answered yet
        idle = time.time() - max(t for t in (rec.ready_since, rec.last_used, 0.0) if t is not None)
        return idle if idle >= keep else None

    async def _do_idle_unload(self, name: str) -> dict[str, Any]:
        rec = self.models.get(name)
        idle = self._idle_past_keep_alive(rec) if rec is not None else None
        if rec is None or idle is None:  # used (or changed) since it was queued
            self._unload_done(name)
            return {"returned": True, "returned_bytes": 0, "skipped": "in use again"}
        self.timeline.record("idle_unload", name, idle_s=round(idle, 1), keep_alive_s=rec.keep_alive_s)
        return await self._do_unload(name)

    async def close(self) -> None:
        """End every worker. An exit is an unload, logged as one (never as a crash)."""
        for rec in list(self.models.values()):
            handle = rec.handle
            if handle is not None:
                self._set(rec, "unloading", "unloading")
                code = await handle.stop(3.0)
                rec.handle = None
                self._set(rec, "unloaded", "unloaded")
                self.timeline.record("unloaded", rec.name, pid=handle.pid, returncode=code, reason="gputui closed")
        for task in (self._consumer, self._keeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.launcher.close()
        await asyncio.to_thread(self.timeline.flush)

    async def _consume(self) -> None:
        while True:
            job = await self._queue.get()
            self.timeline.record("started", job.name, command=job.kind)  # its turn in the queue
            try:
                result = await job.run()
            except Exception as e:  # a command's failure is its own; the queue goes on
                if not job.done.done():
                    job.done.set_exception(e)
            else:
                if not job.done.done():
                    job.done.set_result(result)

    def _submit(self, kind: str, name: str, run: Callable[[], Awaitable[Any]]) -> asyncio.Future[Any]:
        self.start()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(kind, name, run, fut))
        self.timeline.record("queued", name, command=kind)
        return fut

    def worker_pids(self) -> Mapping[int, str]:
        """Our workers' pids -> model names, as of the last change (safe from any thread)."""
        return self._pids

    async def _snapshot(self) -> ServerSnapshot:
        return await memory_checks.snapshot(self.telemetry)

    async def _memory_returned(self, pid: int, placement: Placement) -> dict[str, Any]:
        return await memory_checks.wait_memory_returned(self.telemetry, pid, placement.uuids,
                                                        self.memory_return_timeout)

    def _set(self, rec: ModelRecord, state: str | None = None, stage: str | None = None) -> None:
        if state:
            if state != rec.state:
                rec.state_since = time.time()
            rec.state = state
        if stage:
            rec.stage = stage
        self._changed(rec)

    # -- commands -----------------------------------------------------------------------

    def submit_load(self, request: ModelRequest) -> asyncio.Future[Any]:
        if not NAME_RE.match(request.name):  # a model's name names its journal files and its row
            raise ValueError(f"{request.name!r} is not a model name: use letters, digits, '-', '_' or '.'")
        existing = self.models.get(request.name)
        if existing is None or existing.state in ("failed", "crashed", "unloaded"):
            rec = ModelRecord(request, restarts=existing.restarts if existing is not None else 0,
                              default_keep_alive_s=self.default_keep_alive_s)
            if existing is not None and existing.handle is not None and existing.handle.alive:
                existing.handle.kill()
            self.models[request.name] = rec
        else:
            rec = existing
        self._changed(rec)
        ticket = _LoadTicket()
        self._tickets.setdefault(request.name, []).append(ticket)
        return self._submit("load", request.name, lambda: self._do_load(request, ticket))

    async def load(self, request: ModelRequest) -> ModelRecord:
        return await self.submit_load(request)

    def submit_unload(self, name: str) -> asyncio.Future[Any]:
        """Cancels the model's queued and running loads now (killing a loading worker), then
        queues the unload itself."""
        for ticket in self._tickets.get(name, []):
            if not ticket.cancelled:
                ticket.cancelled = True
                self.timeline.record("load_cancelled", name, pid=ticket.handle.pid if ticket.handle else None)
            if ticket.handle is not None:
                ticket.handle.kill()
        self._unloads_queued[name] = self._unloads_queued.get(name, 0) + 1
        return self._submit("unload", name, lambda: self._do_unload(name))

    async def unload(self, name: str) -> dict[str, Any]:
        return await self.submit_unload(name)

    def submit_move(self, name: str, gpu: str) -> asyncio.Future[Any]:
        return self._submit("move", name, lambda: self._do_move(name, gpu))

    async def move(self, name: str, gpu: str) -> ModelRecord:
        return await self.submit_move(name, gpu)

    def submit_reload(self, name: str) -> asyncio.Future[Any]:
        rec = self.models.get(name)
        if rec is None:
            raise KeyError(f"no model named {name!r}")
        return self.submit_load(rec.request)

    # -- load ---------------------------------------------------------------------------

    async def _do_load(self, request: ModelRequest, ticket: _LoadTicket) -> ModelRecord:
        try:
            return await self._load_once(request, ticket)
        finally:
            tickets = self._tickets.get(request.name, [])
            if ticket in tickets:
                tickets.remove(ticket)

    async def _load_once(self, request: ModelRequest, ticket: _LoadTicket) -> ModelRecord:
        rec = self.models[request.name]
        if ticket.cancelled:
            return rec  # unloaded before its turn: the unload behind it settles the record
        if rec.state == "ready" and rec.request == request:
            return rec  # already placed as asked
        if rec.state == "ready":
            raise PlacementRefused(f"{request.name} is already loaded; unload or move it first")
        started = time.monotonic()
        self._set(rec, "loading", "preflight")
        rec.error = None
        try:
            placement, est = await self._preflight(request)
        except (PlacementRefused, CheckpointError, OSError) as e:
            return self._fail(rec, f"refused at preflight: {e}")
        except Exception as e:  # noqa: BLE001 - a checker's bug must not leave the model at "preflight"
            return self._fail(rec, f"refused at preflight: {type(e).__name__}: {e}")
        rec.placement, rec.estimate = placement, est
        self.timeline.record("preflight_ok", rec.name, gpu=placement.gpu_index, uuid=placement.gpu_uuid,
                             need_bytes=est.total_bytes, usable_bytes=placement.usable_bytes,
                             **_split_fields(placement))
        try:
            handle = await self._start_on(rec, placement, est, ticket=ticket)
        except WorkerFailed as e:
            return self._fail(rec, "load cancelled: unloaded while loading" if ticket.cancelled else str(e))
        rec.handle = handle
        rec.load_seconds = time.monotonic() - started
        rec.ready_since = time.time()
        self._set(rec, "ready", "ready")
        self.timeline.record("ready", rec.name, gpu=placement.gpu_index, pid=handle.pid,
                             predicted_bytes=rec.predicted_bytes, measured_bytes=rec.measured_bytes,
                             seconds=round(rec.load_seconds, 3), timings=rec.ready_report.get("timings"))
        return rec

    async def _preflight(self, request: ModelRequest) -> tuple[Placement, Estimate]:
        dtype = request.dtype_on(self.launcher.device)
        try:
            est, split = await asyncio.wait_for(self.launcher.read_costs(request, dtype), PREFLIGHT_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise CheckpointError(f"{request.path}: reading the checkpoint's headers took over "
                                  f"{PREFLIGHT_TIMEOUT_S:.0f} s (a hung network filesystem?)") from None
        snap = on_node(await self._snapshot(), request.node)
        placement = choose_gpu(snap, est.total_bytes, request.gpus, self.policy, set(self.worker_pids()), split)
        return placement, est

    def _spec(self, rec: ModelRecord, placement: Placement) -> dict[str, Any]:
        r = rec.request
        # absolute(), not resolve(): on a cluster the path is read on the loading node, not here
        return {"name": r.name, "kind": r.kind, "path": str(Path(r.path).absolute()), "dtype": r.dtype,
                "max_context": r.max_context, "device": self.launcher.device,
                "gpu_uuids": placement.uuids, "layer_split": placement.layer_split()}

    async def _start_on(self, rec: ModelRecord, placement: Placement, est: Estimate,
                        mirror: ModelRecord | None = None, ticket: _LoadTicket | None = None) -> WorkerHandle:
        """Start a worker and load rec's model on `placement`; returns the ready handle.
        `mirror` (during a move) shows the new worker's stages on the serving record; `ticket`
        lets an unload kill the worker while it loads."""
        self._set(rec, stage="starting_worker")
        before = await self._snapshot()
        handle = await self.launcher.start_worker(rec.request.kind, placement.uuids)
        self.timeline.record("worker_started", rec.name, pid=handle.pid, gpu=placement.gpu_index)
        if ticket is not None:
            ticket.handle = handle
            if ticket.cancelled:
                handle.kill()

        def on_stage(stage: str) -> None:
            self._set(rec, stage=stage)
            if mirror is not None:
                self._set(mirror, stage=f"moving: {stage}")
            self.timeline.record("stage", rec.name, stage=stage, pid=handle.pid)

        try:
            report = await handle.load(self._spec(rec, placement), on_stage, LOAD_STAGE_TIMEOUT_S)
        except WorkerFailed as e:
            handle.kill()
            await handle.exited.wait()
            after = await self._snapshot()
            raise WorkerFailed(memory_checks.contention_note(str(e), before, after, placement.uuids, handle.pid)) from None
        rec.ready_report = report
        for share in placement.shares:
            self.launcher.placed(handle, share.uuid, share.need_bytes)
        rec.measured_bytes = await memory_checks.held_bytes(self.telemetry, handle.pid, placement.uuids)
        self._watch(rec, handle)
        return handle

    def _fail(self, rec: ModelRecord, message: str) -> ModelRecord:
        rec.error = message
        self._set(rec, "failed", "failed")
        self.timeline.record("failed", rec.name, error=message)
        return rec

    # -- crash watch --------------------------------------------------------------------

    def _watch(self, rec: ModelRecord, handle: WorkerHandle) -> None:
        async def watch() -> None:
            await handle.exited.wait()
            self.crashes_in_hand += 1
            try:
                await report(rec, handle)
            finally:
                self.crashes_in_hand -= 1

        async def report(rec: ModelRecord, handle: WorkerHandle) -> None:
            if rec.handle is handle and rec.state == "ready":
                tail = handle.stderr_text(3)
                fatal = handle.fatal.get("message") if handle.fatal else None
                rec.error = fatal or f"worker exited with code {handle.returncode}" + (f": {tail}" if tail else "")
                if handle.machine_lost:  # not the model's fault, and nothing to restart it on
                    rec.error = handle.machine_lost
                    self._set(rec, "failed", "failed")
                else:
                    self._set(rec, "crashed", "crashed")
                self.timeline.record(rec.state, rec.name, pid=handle.pid, returncode=handle.returncode, error=rec.error)
                if rec.placement is not None:
                    returned = await self._memory_returned(handle.pid, rec.placement)
                    self.timeline.record("memory_check", rec.name, pid=handle.pid, **returned)
                self._restart_if_poisoned(rec, handle)

        task = asyncio.create_task(watch())
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def _restart_if_poisoned(self, rec: ModelRecord, handle: WorkerHandle) -> None:
        """A device-side assert poisons the CUDA process, not the model: the worker ended
        itself, so bring the model back in a fresh one (a few times at most, then leave it
        crashed for the user to look at)."""
        if not (handle.fatal and handle.fatal.get("device_assert")):
            return
        rec.restarts += 1
        if rec.restarts > MAX_POISON_RESTARTS:
            return
        self.timeline.record("restarting", rec.name, reason="device-side assert", attempt=rec.restarts)
        self.submit_load(rec.request)

    # -- unload and move ----------------------------------------------------------------

    async def _do_unload(self, name: str) -> dict[str, Any]:
        try:
            return await self._unload_once(name)
        finally:
            self._unload_done(name)

    def _unload_done(self, name: str) -> None:
        left = self._unloads_queued.get(name, 1) - 1
        if left:
            self._unloads_queued[name] = left
        else:
            self._unloads_queued.pop(name, None)

    async def _unload_once(self, name: str) -> dict[str, Any]:
        rec = self.models.get(name)
        if rec is None:
            raise KeyError(f"no model named {name!r}")
        handle, placement = rec.handle, rec.placement
        if handle is None or placement is None:
            self._set(rec, "unloaded", "unloaded")
            return {"returned": True, "returned_bytes": 0}
        self._set(rec, "unloading", "unloading")
        before = await self._snapshot()
        free_before = memory_checks.free_bytes(before, placement.uuids)
        t0 = time.monotonic()
        code = await handle.stop()
        result = await self._memory_returned(handle.pid, placement)
        free_after = result.get("free_bytes")
        returned = (free_after - free_before) if free_after is not None and free_before is not None else None
        result.update(returncode=code, seconds=round(time.monotonic() - t0, 3), returned_bytes=returned,
                      expected_bytes=rec.measured_bytes)
        rec.handle = None
        self._set(rec, "unloaded", "unloaded")
        self.timeline.record("unloaded", name, gpu=placement.gpu_index, pid=handle.pid, **result)
        return result

    async def _do_move(self, name: str, gpu: str) -> ModelRecord:
        """Bring the model up on `gpu`, then end the old worker. If the target fails, the
        source stays up and serving.

        The new worker reads the weights from the files (page cache), not from the old worker:
        measured on an H100, that read takes 0.4-0.5 s for ChatGLM3-6B inside a worker. Handing
        the tensors over by CUDA IPC copied them in 9 ms on one GPU, but across GPUs the new
        worker would have to open a CUDA context on the source GPU (538 MiB, for its whole
        life) - the kind of allocation on a busy GPU that gputui exists to avoid - to save at
        most those 0.5 s of a ~2.3 s load (bench/RESULTS.md, "Move")."""
        rec = self.models.get(name)
        if rec is None or rec.state != "ready" or rec.handle is None or rec.placement is None:
            raise NotReady(f"{name} is not ready, so it cannot be moved")
        new_request = replace(rec.request, gpus=(gpu,), node=None)  # the GPU names its node
        old_handle, old_placement = rec.handle, rec.placement
        self._set(rec, stage="preflight")
        try:
            placement, est = await self._preflight(new_request)
        except (PlacementRefused, CheckpointError) as e:
            self._set(rec, stage="ready")
            raise PlacementRefused(f"move of {name} refused: {e}") from None
        staging = ModelRecord(new_request, placement=placement, estimate=est,
                              default_keep_alive_s=self.default_keep_alive_s)
        try:
            new_handle = await self._start_on(staging, placement, est, mirror=rec)
        except WorkerFailed as e:
            self._set(rec, stage="ready")
            self.timeline.record("move_failed", name, error=str(e))
            raise
        rec.handle, rec.placement, rec.request = new_handle, placement, new_request
        rec.measured_bytes, rec.ready_report = staging.measured_bytes, staging.ready_report
        self._watch(rec, new_handle)
        self._set(rec, "ready", "ready")
        await old_handle.stop()
        returned = await self._memory_returned(old_handle.pid, old_placement)
        self.timeline.record("moved", name, source=_where(old_placement), target=_where(placement), **returned)
        return rec

    # -- chat ---------------------------------------------------------------------------

    def ready_record(self, name: str) -> ModelRecord:
        rec = self.models.get(name)
        if rec is None:
            raise NotReady(f"no model named {name!r} is loaded")
        if rec.state != "ready" or rec.handle is None:
            raise NotReady(rec.view().not_ready_reason() or f"{name} cannot answer now")
        return rec

    async def chat(self, name: str, request: dict[str, Any], on_request_id: Callable[[str], None] | None = None
                   ) -> AsyncIterator[dict[str, Any]]:
        """Stream one request's events from a ready model (never queued behind commands)."""
        rec = self.ready_record(name)
        handle = rec.handle
        assert handle is not None
        params = {**rec.request.generation, **(request.get("params") or {})}
        rid = handle.new_request_id()
        rec.last_used = time.time()
        rec.active_chats += 1
        self._changed(rec)
        if on_request_id is not None:
            on_request_id(rid)
        try:
            async for event in handle.generate({**request, "params": params}, rid):
                yield event
        finally:
            rec.active_chats -= 1
            rec.last_used = time.time()  # idle from the end of the reply

    async def cancel(self, name: str, rid: str) -> None:
        rec = self.models.get(name)
        if rec is not None and rec.handle is not None:
            await rec.handle.cancel(rid)


def _split_fields(placement: Placement) -> dict[str, Any]:
    """Timeline fields of a split placement: every GPU, with its layers and need."""
    if not placement.split:
        return {}
    return {"gpus": [{"gpu": s.index, "uuid": s.uuid, "layers": list(s.layers or ()), "need_bytes": s.need_bytes}
                     for s in placement.shares]}


def _where(placement: Placement) -> int | str:
    """A GPU index, or "0+1" for a split model."""
    return placement.label if placement.split else placement.gpu_index
