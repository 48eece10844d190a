"""The scheduler: lifecycle commands strictly one at a time, chat to ready models alongside.

A single consumer task takes commands (load, unload, move, idle unload) from one queue in arrival
order and runs their steps (steps.py). Chat requests go straight to a ready model's worker and
never wait behind that queue. A worker that dies at any time turns its model to `crashed`, its
memory is checked back, and everything else carries on (crash_watch.py).

One loop owns the state: records change only through the model table (records.py), on the loop
this runs on; other threads and clients read its immutable views and its numbered event stream.

An unload always works: an unload of a model that is still queued or loading cancels that load
and kills its worker at once, without waiting for its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gputui.api.views import ModelState, ModelView
from gputui.core.placement import PlacementPolicy
from gputui.core.profiles import NAME_RE
from gputui.core.requests import ModelRequest
from gputui.hardware.base import GpuTelemetry
from gputui.scheduler.crash_watch import CrashWatch
from gputui.scheduler.events import EventLog
from gputui.scheduler.launcher import WorkerLauncher
from gputui.scheduler.records import LoadTicket, ModelRecord, ModelTable, NotReady
from gputui.scheduler.steps import Steps
from gputui.scheduler.timeline import Timeline

__all__ = ["Scheduler", "ModelRecord", "NotReady"]

MEMORY_RETURN_TIMEOUT_S = 30.0
KEEP_ALIVE_TICK_S = 1.0
DEFAULT_POLICY = PlacementPolicy()
RESTING_FOR_A_NEW_RECORD = (ModelState.FAILED, ModelState.CRASHED, ModelState.UNLOADED)


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
        evict_idle: bool = False,
    ) -> None:
        self.telemetry = telemetry
        self.launcher = launcher
        self.policy = policy
        self.timeline = timeline or Timeline()
        self.default_keep_alive_s = default_keep_alive_s  # settings keep_alive; None: forever
        self.table = ModelTable(self.timeline)
        self.models: dict[str, ModelRecord] = self.table.models  # the loop's own; others read views()
        self.crashes = CrashWatch(self.table, self._memory_returned, self.submit_load)
        self.steps = Steps(self.table, telemetry, launcher, policy, memory_return_timeout, default_keep_alive_s,
                           self.crashes, evict_idle=evict_idle)
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._tickets: dict[str, list[LoadTicket]] = {}
        self._unloads_queued: dict[str, int] = {}  # name -> unloads submitted, not yet done

    # -- what readers see (safe from any thread) ----------------------------------------

    @property
    def events(self) -> EventLog:
        return self.table.events

    @property
    def crashes_in_hand(self) -> int:
        return self.crashes.in_hand

    def subscribe(self, fn: Callable[[ModelView], None]) -> None:
        """Call `fn` with a model's new view on every change (on the loop; for in-process
        listeners - a client follows `events` instead)."""
        self.table.subscribe(fn)

    def views(self) -> list[ModelView]:
        """Every model as it is now."""
        return self.table.views()

    def view(self, name: str) -> ModelView | None:
        return self.table.view(name)

    def worker_pids(self) -> Mapping[int, str]:
        """Our workers' pids -> model names, as of the last change."""
        return self.table.pids()

    async def _memory_returned(self, pid: int, placement: Any) -> dict[str, Any]:
        return await self.steps.memory_returned(pid, placement)

    # -- the queue ----------------------------------------------------------------------

    def start(self) -> None:
        if self._consumer is None:
            self._consumer = asyncio.create_task(self._consume(), name="gputui-scheduler")
            self._keeper = asyncio.create_task(self._keep_alive(), name="gputui-keep-alive")

    async def close(self) -> None:
        """End every worker. An exit is an unload, logged as one (never as a crash)."""
        await self.steps.end_all()
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

    # -- commands -----------------------------------------------------------------------

    def submit_load(self, request: ModelRequest) -> asyncio.Future[Any]:
        if not NAME_RE.match(request.name):  # a model's name names its journal files and its row
            raise ValueError(f"{request.name!r} is not a model name: use letters, digits, '-', '_' or '.'")
        existing = self.models.get(request.name)
        if existing is None or existing.state in RESTING_FOR_A_NEW_RECORD:
            rec = ModelRecord(request, restarts=existing.restarts if existing is not None else 0,
                              default_keep_alive_s=self.default_keep_alive_s)
            if existing is not None and existing.handle is not None and existing.handle.alive:
                existing.handle.kill()
            self.models[request.name] = rec
        else:
            rec = existing
        self.table.changed(rec)
        ticket = LoadTicket()
        self._tickets.setdefault(request.name, []).append(ticket)
        return self._submit("load", request.name, functools.partial(self._do_load, request, ticket))

    async def load(self, request: ModelRequest) -> ModelRecord:
        return await self.submit_load(request)  # type: ignore[no-any-return]

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
        return self._submit("unload", name, functools.partial(self._do_unload, name))

    async def unload(self, name: str) -> dict[str, Any]:
        return await self.submit_unload(name)  # type: ignore[no-any-return]

    def submit_move(self, name: str, gpu: str) -> asyncio.Future[Any]:
        return self._submit("move", name, functools.partial(self.steps.move, name, gpu))

    async def move(self, name: str, gpu: str) -> ModelRecord:
        return await self.submit_move(name, gpu)  # type: ignore[no-any-return]

    async def _do_load(self, request: ModelRequest, ticket: LoadTicket) -> ModelRecord:
        try:
            return await self.steps.load(request, ticket)
        finally:
            tickets = self._tickets.get(request.name, [])
            if ticket in tickets:
                tickets.remove(ticket)

    async def _do_unload(self, name: str) -> dict[str, Any]:
        try:
            return await self.steps.unload(name)
        finally:
            self._unload_done(name)

    def _unload_done(self, name: str) -> None:
        left = self._unloads_queued.get(name, 1) - 1
        if left:
            self._unloads_queued[name] = left
        else:
            self._unloads_queued.pop(name, None)

    # -- keep-alive ---------------------------------------------------------------------

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
        if keep is None or rec.state != ModelState.READY or rec.active_chats or self._tickets.get(rec.name):
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

    # -- chat ---------------------------------------------------------------------------

    def ready_record(self, name: str) -> ModelRecord:
        rec = self.models.get(name)
        if rec is None:
            raise NotReady(f"no model named {name!r} is loaded")
        if rec.state != ModelState.READY or rec.handle is None:
            raise NotReady(rec.view().not_ready_reason() or f"{name} cannot answer now")
        return rec

    async def chat(self, name: str, request: dict[str, Any], on_request_id: Callable[[str], None] | None = None,
                   asker: str = "local") -> AsyncIterator[dict[str, Any]]:
        """Stream one request's events from a ready model (never queued behind commands); it
        waits for its turn with the model's other requests, fairly between askers (turns.py)."""
        rec = self.ready_record(name)
        handle = rec.handle
        assert handle is not None
        params = {**rec.request.generation, **(request.get("params") or {})}
        rid = handle.new_request_id()
        rec.last_used = time.time()
        rec.active_chats += 1
        self.table.changed(rec)
        if on_request_id is not None:
            on_request_id(rid)
        try:
            async with rec.turns.turn(asker, rec.view().slots):
                async for event in handle.generate({**request, "params": params}, rid):
                    yield event
        finally:
            rec.active_chats -= 1
            rec.last_used = time.time()  # idle from the end of the reply
            self.table.changed(rec)  # ps and the dashboard show the requests under way

    async def cancel(self, name: str, rid: str) -> None:
        rec = self.models.get(name)
        if rec is not None and rec.handle is not None:
            await rec.handle.cancel(rid)
