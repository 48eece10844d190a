"""Model records and the one place their state changes.

A record's state moves only along TRANSITIONS; `ModelTable.to` is the only writer of a state. It
announces the change (a new view for readers on other threads, an event for clients) and, when
asked, the timeline record that goes with it - so a state and its record never disagree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gputui.api.client import CommandRefused
from gputui.api.views import ModelState, ModelView
from gputui.core.estimate import Estimate
from gputui.core.placement import Placement
from gputui.core.requests import ModelRequest, effective_keep_alive
from gputui.scheduler.events import EventLog
from gputui.scheduler.timeline import Timeline
from gputui.scheduler.turns import FairTurns
from gputui.scheduler.worker_handle import WorkerHandle

Q, L, R = ModelState.QUEUED, ModelState.LOADING, ModelState.READY
UG, UD, F, C = ModelState.UNLOADING, ModelState.UNLOADED, ModelState.FAILED, ModelState.CRASHED
# What may follow what. A record that failed, crashed or was unloaded is replaced by a new one
# (queued) on the next load; the same record goes back to loading only when a load queued while
# it was busy gets its turn. Failed and crashed records may still hold a worker to end (unloading).
TRANSITIONS: Mapping[ModelState, frozenset[ModelState]] = MappingProxyType({
    Q: frozenset({L, UD}),
    L: frozenset({R, F, UD}),
    R: frozenset({UG, C, F}),  # failed: its machine was lost (a Ray node), nothing to restart
    UG: frozenset({UD}),
    UD: frozenset({L}),
    F: frozenset({L, UG, UD}),
    C: frozenset({L, UG, UD}),
})


class IllegalTransition(RuntimeError):
    """A scheduler bug: a state change the table does not allow."""


class NotReady(CommandRefused):
    """A chat (or move) to a model that cannot answer now; the message says why."""


@dataclass
class ModelRecord:
    request: ModelRequest
    state: ModelState = ModelState.QUEUED
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
    turns: FairTurns = field(default_factory=FairTurns)  # whose request it answers next
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
        return ModelView(self.request, self.state, self.stage,
                         self.placement.shares if self.placement is not None else (), self.predicted_bytes,
                         self.measured_bytes, self.pid, self.error, self.load_seconds, self.ready_since,
                         self.last_used, self.restarts, dict(self.ready_report.get("runtime") or {}),
                         dict(self.ready_report.get("timings") or {}), self.keep_alive_s, self.state_since,
                         self.active_chats)


@dataclass
class LoadTicket:
    """One submitted load, so an unload can cancel it: before it starts, or by killing its worker."""

    cancelled: bool = False
    handle: WorkerHandle | None = None


class ModelTable:
    """The records, owned by the scheduler's loop; what other threads and clients read are
    immutable snapshots (a view per model, the pid map), replaced whole on every change, and the
    numbered event stream."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.models: dict[str, ModelRecord] = {}
        self._views: Mapping[str, ModelView] = MappingProxyType({})
        self._pids: Mapping[int, str] = MappingProxyType({})
        self._listeners: list[Callable[[ModelView], None]] = []
        self.events = EventLog(lambda: [v.to_json() for v in self._views.values()])
        timeline.subscribe(self._timeline_event)

    def _timeline_event(self, record: dict[str, Any]) -> None:
        self.events.emit("timeline", record.get("model"), record)

    def to(self, rec: ModelRecord, state: ModelState, stage: str | None = None, *,
           record: dict[str, Any] | None = None) -> None:
        """Move `rec` to `state` (its stage too: the state's name unless given), announce it, and
        write the timeline record named after the state when `record` holds its fields."""
        if state != rec.state:
            if state not in TRANSITIONS[rec.state]:
                raise IllegalTransition(f"{rec.name}: {rec.state.value} -> {state.value}")
            rec.state_since = time.time()
            rec.state = state
        rec.stage = stage or state.value
        self.changed(rec)
        if record is not None:
            self.timeline.record(state.value, rec.name, **record)

    def stage(self, rec: ModelRecord, stage: str) -> None:
        rec.stage = stage
        self.changed(rec)

    def changed(self, rec: ModelRecord) -> None:
        view = rec.view()
        # replaced whole, never changed in place: a reader on another thread sees before or after
        self._views = MappingProxyType({**self._views, rec.name: view})
        self._pids = MappingProxyType({r.pid: r.name for r in self.models.values() if r.pid is not None})
        self.events.emit("model", rec.name, view.to_json())
        for fn in list(self._listeners):
            fn(view)

    def subscribe(self, fn: Callable[[ModelView], None]) -> None:
        self._listeners.append(fn)

    def views(self) -> list[ModelView]:
        return list(self._views.values())

    def view(self, name: str) -> ModelView | None:
        return self._views.get(name)

    def pids(self) -> Mapping[int, str]:
        return self._pids
