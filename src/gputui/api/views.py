"""What a client sees: immutable, JSON-serialisable pictures of models and of what happened."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gputui.core.placement import GpuShare
from gputui.core.requests import ModelRequest
from gputui.core.text import visible
from gputui.core.units import human_bytes


class ModelState(str, Enum):
    QUEUED = "queued"
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    UNLOADED = "unloaded"
    FAILED = "failed"
    CRASHED = "crashed"

    def __str__(self) -> str:  # "ready", as the wire and the logs write it, not "ModelState.READY"
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def resting(self) -> bool:
        """Nothing is under way: the model stays so until a command changes it."""
        return self in (ModelState.READY, ModelState.UNLOADED, ModelState.FAILED, ModelState.CRASHED)


_WHY_NOT_READY = {
    ModelState.LOADING: "it is still loading ({stage})", ModelState.QUEUED: "it is queued to load",
    ModelState.FAILED: "it failed to load: {error}", ModelState.CRASHED: "its worker crashed: {error}",
    ModelState.UNLOADING: "it is being unloaded", ModelState.UNLOADED: "it was unloaded",
}


@dataclass(frozen=True)
class ModelView:
    request: ModelRequest
    state: ModelState
    stage: str
    gpus: tuple[GpuShare, ...] = ()  # the whole model on one, or runs of layers over several
    predicted_bytes: int | None = None
    measured_bytes: int | None = None
    pid: int | None = None
    error: str | None = None
    load_seconds: float | None = None
    ready_since: float | None = None  # wall-clock time it became ready
    last_used: float | None = None  # wall-clock time of its last chat request
    restarts: int = 0
    runtime: dict[str, Any] = field(default_factory=dict)  # what the worker says of its decode path
    timings: dict[str, Any] = field(default_factory=dict)  # of the load's stages
    keep_alive_s: float | None = None  # in effect (its own, else the server's default); None: kept
    state_since: float | None = None  # wall clock of its last change of state (ps hides long-gone models)
    in_use: int = 0  # requests under way now: answering (up to slots) or waiting for a slot

    @property
    def slots(self) -> int:
        """Replies it answers at once: max_batch for a batching kind on one GPU, else 1."""
        batching = bool(self.runtime.get("max_batch")) and len(self.gpus) <= 1
        return int(self.runtime.get("max_batch") or 1) if batching else 1

    @property
    def name(self) -> str:
        return self.request.name

    @property
    def kind(self) -> str:
        return self.request.kind

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    @property
    def gpu_label(self) -> str:
        """"0", "0+1" for a split model, "node-b:2" on a cluster, "-" when not placed."""
        return "+".join(s.label for s in self.gpus) or "-"

    @property
    def uuids(self) -> tuple[str, ...]:
        return tuple(s.uuid for s in self.gpus)

    def keep_alive_left(self, now: float | None = None) -> float | None:
        """Seconds until an idle unload (None: kept for ever, or not ready)."""
        keep = self.keep_alive_s
        if keep is None or not self.ready:
            return None
        idle_since = max(t for t in (self.ready_since, self.last_used, 0.0) if t is not None)
        return max(0.0, keep - ((now or time.time()) - idle_since))

    def gone_for(self, now: float | None = None) -> float | None:
        """Seconds since it was unloaded or failed (None while it is loaded or under way)."""
        if self.state not in (ModelState.UNLOADED, ModelState.FAILED, ModelState.CRASHED) or self.state_since is None:
            return None
        return (now or time.time()) - self.state_since

    def not_ready_reason(self) -> str | None:
        """Why it cannot answer a chat now, as one line; None when it can."""
        if self.ready:
            return None
        why = _WHY_NOT_READY.get(self.state, self.state.value).format(stage=self.stage, error=self.error)
        return f"{self.name} cannot answer: {why}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "state": self.state.value, "stage": self.stage,
                "request": self.request.to_json(), "gpus": [g.to_json() for g in self.gpus],
                "predicted_bytes": self.predicted_bytes, "measured_bytes": self.measured_bytes, "pid": self.pid,
                "error": self.error, "load_seconds": self.load_seconds, "ready_since": self.ready_since,
                "last_used": self.last_used, "restarts": self.restarts, "runtime": self.runtime,
                "timings": self.timings, "keep_alive_s": self.keep_alive_s, "state_since": self.state_since,
                "in_use": self.in_use}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelView:
        return cls(ModelRequest.from_json(d["request"]), ModelState(d["state"]), str(d["stage"]),
                   tuple(GpuShare.from_json(g) for g in d.get("gpus") or ()), d.get("predicted_bytes"),
                   d.get("measured_bytes"), d.get("pid"), d.get("error"), d.get("load_seconds"),
                   d.get("ready_since"), d.get("last_used"), int(d.get("restarts") or 0),
                   dict(d.get("runtime") or {}), dict(d.get("timings") or {}), d.get("keep_alive_s"),
                   d.get("state_since"), int(d.get("in_use") or 0))


@dataclass(frozen=True)
class Event:
    """One thing that happened, numbered: `model` (data: the model's new view) or `timeline`
    (data: a lifecycle record as events.jsonl has it), or `reset` (data: {"models": [views]},
    sent first to a client that asks from a number older than what is kept)."""

    seq: int
    t: float
    type: str
    model: str | None
    data: dict[str, Any]

    def view(self) -> ModelView:
        return ModelView.from_json(self.data)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "t": self.t, "type": self.type, "model": self.model, "data": self.data}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Event:
        return cls(int(d["seq"]), float(d["t"]), str(d["type"]), d.get("model"), dict(d.get("data") or {}))


@dataclass(frozen=True)
class UnloadResult:
    name: str
    returned: bool  # NVML shows the worker's memory back
    returned_bytes: int | None = None
    expected_bytes: int | None = None
    seconds: float | None = None
    returncode: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "returned": self.returned, "returned_bytes": self.returned_bytes,
                "expected_bytes": self.expected_bytes, "seconds": self.seconds, "returncode": self.returncode}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UnloadResult:
        return cls(str(d["name"]), bool(d["returned"]), d.get("returned_bytes"), d.get("expected_bytes"),
                   d.get("seconds"), d.get("returncode"))


@dataclass(frozen=True)
class PlanLine:
    """One model of a profile's dry run: would it fit, where, and why not."""

    model: str
    fits: bool
    gpu_index: int | None
    need_bytes: int | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "fits": self.fits, "gpu_index": self.gpu_index, "need_bytes": self.need_bytes,
                "message": self.message}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlanLine:
        return cls(str(d["model"]), bool(d["fits"]), d.get("gpu_index"), d.get("need_bytes"), str(d["message"]))


@dataclass(frozen=True)
class ProfileStep:
    """What applying a profile did with one model: `loaded`, `kept` (already as asked, or up
    elsewhere and left there), `failed`, or `skipped` (after a failure)."""

    model: str
    outcome: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "outcome": self.outcome, "message": self.message}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ProfileStep:
        return cls(str(d["model"]), str(d["outcome"]), str(d["message"]))


def event_line(ev: dict[str, Any], with_time: bool = True) -> str:
    """A lifecycle record as one line of text (the dashboard's event log; the server's log,
    whose lines carry their own date)."""
    t = time.strftime("%H:%M:%S ", time.localtime(ev.get("t", time.time()))) if with_time else ""
    skip = {"t", "event", "model", "timings", "traceback"}
    rest = " ".join(f"{k}={_short(v)}" for k, v in ev.items() if k not in skip and v is not None)
    return visible(f"{t}{ev.get('model') or '-'} {ev.get('event')} {rest}", one_line=True)


def _short(v: Any) -> str:
    if isinstance(v, int) and v > 1 << 20:
        return human_bytes(v)
    s = str(v)
    return s if len(s) < 120 else s[:117] + "..."
