"""A worker that dies on its own: its model turns `crashed` (or `failed` when its machine went
away), its memory is checked back, and a device-side assert brings the model back in a fresh
worker a few times at most. Everything else carries on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gputui.api.views import ModelState
from gputui.core.placement import Placement
from gputui.core.requests import ModelRequest
from gputui.scheduler.records import ModelRecord, ModelTable
from gputui.scheduler.worker_handle import WorkerHandle

MAX_POISON_RESTARTS = 3
log = logging.getLogger(__name__)


class CrashWatch:
    def __init__(self, table: ModelTable, memory_returned: Callable[[int, Placement], Awaitable[dict[str, Any]]],
                 reload: Callable[[ModelRequest], asyncio.Future[Any]]) -> None:
        self.table = table
        self._memory_returned = memory_returned
        self._reload = reload
        self._tasks: set[asyncio.Task[None]] = set()
        self.in_hand = 0  # watchers between a worker's exit and their memory check

    def watch(self, rec: ModelRecord, handle: WorkerHandle) -> None:
        task = asyncio.create_task(self._watch(rec, handle))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, rec: ModelRecord, handle: WorkerHandle) -> None:
        await handle.exited.wait()
        self.in_hand += 1
        try:
            await self._report(rec, handle)
        finally:
            self.in_hand -= 1

    async def _report(self, rec: ModelRecord, handle: WorkerHandle) -> None:
        if rec.handle is not handle or rec.state != ModelState.READY:
            return  # an unload or a move ended it
        tail = handle.stderr_text(3)
        fatal = handle.fatal.get("message") if handle.fatal else None
        rec.error = fatal or f"worker exited with code {handle.returncode}" + (f": {tail}" if tail else "")
        if handle.machine_lost:  # not the model's fault, and nothing to restart it on
            rec.error = handle.machine_lost
        state = ModelState.FAILED if handle.machine_lost else ModelState.CRASHED
        self.table.to(rec, state, record={"pid": handle.pid, "returncode": handle.returncode, "error": rec.error})
        if rec.placement is not None:
            returned = await self._memory_returned(handle.pid, rec.placement)
            self.table.timeline.record("memory_check", rec.name, pid=handle.pid, **returned)
        self._restart_if_poisoned(rec, handle)

    def _restart_if_poisoned(self, rec: ModelRecord, handle: WorkerHandle) -> None:
        """A device-side assert poisons the CUDA process, not the model: the worker ended
        itself, so bring the model back in a fresh one (a few times at most, then leave it
        crashed for the user to look at). The reload's outcome is the load's own (its records);
        a refusal to queue it at all is logged here."""
        if not (handle.fatal and handle.fatal.get("device_assert")):
            return
        rec.restarts += 1
        if rec.restarts > MAX_POISON_RESTARTS:
            return
        self.table.timeline.record("restarting", rec.name, reason="device-side assert", attempt=rec.restarts)
        try:
            self._reload(rec.request).add_done_callback(_retrieve)
        except Exception as e:  # noqa: BLE001 - the crash stays reported; say why no restart came
            log.warning("%s: no restart: %s", rec.name, e)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """A restart's future is awaited by no one: take its outcome so asyncio never reports it as
    never retrieved (the load wrote its own records)."""
    if not fut.cancelled():
        fut.exception()
