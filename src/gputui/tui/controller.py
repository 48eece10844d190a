"""What the TUI asks of the scheduler: load, unload, move, reload, profiles, chats.

All commands go through the scheduler's queue (one at a time, in order); this class only turns
key presses and palette commands into those calls and reports outcomes as notifications.
It holds no torch and no CUDA: models live in worker processes.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gputui.chat.session import ChatSession
from gputui.chat.store import ConversationLog
from gputui.core.requests import ModelRequest
from gputui.scheduler.scheduler import Scheduler

F = TypeVar("F", bound=Callable[..., Any])


def command(fn: F) -> F:
    """A key or palette command: whatever it raises becomes a message, never the app's end."""
    @functools.wraps(fn)
    def run(self: ModelController, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - reported; the models stay up
            self.app.notify(f"{fn.__name__.replace('_', ' ')} failed: {e}", severity="error", timeout=12)
            return None
    return run  # type: ignore[return-value]


class ModelController:
    def __init__(self, app: Any, scheduler: Scheduler | None, lock_note: str | None = None) -> None:
        self.app = app
        self.scheduler = scheduler
        self.lock_note = lock_note  # why this instance only monitors
        self.sessions: dict[str, ChatSession] = {}

    def usable(self) -> bool:
        if self.scheduler is None:
            self.app.notify(self.lock_note or "model scheduling is off in this instance", severity="warning")
            return False
        return True

    def _report(self, what: str, fut: asyncio.Future[Any]) -> None:
        def done(f: asyncio.Future[Any]) -> None:
            if f.cancelled():
                return
            e = f.exception()
            if e is not None:
                self.app.notify(f"{what}: {e}", severity="error", timeout=10)
                return
            r = f.result()
            state = getattr(r, "state", None)
            if state in ("failed", "crashed"):
                self.app.notify(f"{what}: {r.error}", severity="error", timeout=12)
            elif state == "ready":
                self.app.notify(f"{what}: ready on GPU {r.placement.label}")
            elif isinstance(r, dict) and "returned" in r:
                back = (r.get("returned_bytes") or 0) >> 20
                self.app.notify(f"{what}: done, {back} MiB back" if r["returned"] else f"{what}: memory still held")
        fut.add_done_callback(done)

    @command
    def load(self, spec: dict[str, Any]) -> None:
        if not self.usable():
            return
        assert self.scheduler is not None
        req = ModelRequest(name=spec["name"], kind=spec["kind"], path=str(Path(spec["path"]).expanduser()),
                           gpus=tuple((spec.get("gpu") or "auto").split(",")), max_context=spec.get("max_context"))
        self._report(f"load {req.name}", self.scheduler.submit_load(req))

    @command
    def load_request(self, req: ModelRequest) -> None:
        if self.usable():
            assert self.scheduler is not None
            self._report(f"load {req.name}", self.scheduler.submit_load(req))

    @command
    def unload(self, name: str) -> None:
        if self.usable():
            assert self.scheduler is not None
            self._report(f"unload {name}", self.scheduler.submit_unload(name))

    @command
    def move(self, name: str, gpu: str) -> None:
        if self.usable():
            assert self.scheduler is not None
            self._report(f"move {name}", self.scheduler.submit_move(name, gpu))

    @command
    def reload(self, name: str) -> None:
        if self.usable():
            assert self.scheduler is not None
            self._report(f"reload {name}", self.scheduler.submit_reload(name))

    # -- freeing a GPU ------------------------------------------------------------------

    def my_processes(self, snapshot: Any) -> list[tuple[int, int, Any]]:
        """(gpu index, pid, process) for processes of this user that are not our model workers.
        Other users' processes are never offered."""
        import getpass

        me = getpass.getuser()
        ours = set(self.scheduler.worker_pids()) if self.scheduler else set()
        out = []
        for g in (snapshot.gpus if snapshot else ()):
            for p in g.processes:
                if p.user == me and p.pid not in ours and p.pid != os.getpid():
                    out.append((g.index, p.pid, p))
        return out

    @command
    def end_process(self, pid: int) -> None:
        """SIGTERM, then SIGKILL after 5 s; the dashboard shows the memory coming back.
        On the simulated server the process is only simulated, so it is released there."""
        telemetry = self.app.telemetry
        if telemetry.backend == "simulated":
            telemetry.release(pid)
            self.app.notify(f"ended simulated process {pid}")
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        except PermissionError:
            self.app.notify(f"not allowed to end pid {pid}", severity="error")
            return
        self.app.notify(f"sent SIGTERM to {pid}; SIGKILL in 5 s if it is still there")

        def kill_later() -> None:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

        self.app.set_timer(5.0, kill_later)

    def ready_models(self) -> list[str]:
        if self.scheduler is None:
            return []
        return [r.name for r in self.scheduler.models.values() if r.state == "ready"]

    async def session(self, name: str) -> ChatSession:
        """The conversation with `name`, created (and journaled) on first use."""
        assert self.scheduler is not None
        s = self.sessions.get(name)
        if s is None:
            rec = self.scheduler.models[name]
            gen = dict(rec.request.generation)
            system = gen.pop("system_prompt", None)
            log = await ConversationLog.create(name, rec.request.kind, params=gen, system_prompt=system)
            s = ChatSession(self.scheduler, name, rec.request.kind, log, system, gen)
            self.sessions[name] = s
        return s

    def blip2_session(self) -> ChatSession | None:
        """A ready BLIP2's session, for 'describe then discuss'."""
        if self.scheduler is None:
            return None
        for r in self.scheduler.models.values():
            if r.state == "ready" and r.request.kind == "blip2":
                return self.sessions.get(r.name) or ChatSession(self.scheduler, r.name, "blip2")
        return None
