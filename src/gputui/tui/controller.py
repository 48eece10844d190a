"""What the TUI asks of the models: load, unload, move, reload, and the chats.

Every command goes through the client (gputui.api.Client) and from there through the
scheduler's queue, one at a time, in order. Each runs in a Textual worker and reports its typed
result as a notification; a refusal is a message, never the app's end. No torch, no CUDA here.
"""

from __future__ import annotations

import functools
import getpass
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from textual.app import App
from textual.notifications import SeverityLevel

from gputui.api.client import Client, CommandRefused
from gputui.api.views import ModelView, UnloadResult
from gputui.chat.session import ChatSession, ready_describer
from gputui.core.requests import ModelRequest, for_the_dashboard
from gputui.core.snapshot import GpuProcess, ServerSnapshot
from gputui.core.units import human_bytes
from gputui.hardware.base import GpuTelemetry
from gputui.hardware.simulated import SimulatedServer

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


def outcome(what: str, result: ModelView | UnloadResult) -> tuple[str, SeverityLevel]:
    """(message, severity) for a command's typed result."""
    if isinstance(result, UnloadResult):
        if not result.returned:
            return f"{what}: its memory is still held", "warning"
        return f"{what}: done, {human_bytes(result.returned_bytes or 0)} back", "information"
    if result.ready:
        return f"{what}: ready on GPU {result.gpu_label}", "information"
    return f"{what}: {result.error or result.state.value}", "error"


class ModelController:
    def __init__(self, app: App[None], telemetry: GpuTelemetry, client: Client | None,
                 lock_note: str | None = None) -> None:
        self.app = app  # for notifications, workers and timers: what Textual's App offers, no more
        self.telemetry = telemetry
        self.client = client
        self.lock_note = lock_note  # why this instance only monitors
        self.sessions: dict[str, ChatSession] = {}

    def usable(self) -> bool:
        if self.client is None:
            self.app.notify(self.lock_note or "model scheduling is off in this instance", severity="warning")
            return False
        return True

    def _run(self, what: str, call: Callable[[Client], Awaitable[ModelView | UnloadResult]]) -> None:
        """Run one command in a Textual worker and say how it ended."""
        if not self.usable():
            return
        client = self.client
        assert client is not None

        async def go() -> None:
            try:
                result = await call(client)
            except CommandRefused as e:
                self.app.notify(f"{what}: {e}", severity="error", timeout=12)
                return
            message, severity = outcome(what, result)
            self.app.notify(message, severity=severity, timeout=12 if severity != "information" else None)

        self.app.run_worker(go(), group="command", exit_on_error=False, name=what)

    @command
    def load(self, request: ModelRequest) -> None:
        request = for_the_dashboard(request)
        self._run(f"load {request.name}", lambda c: c.load(request))

    @command
    def unload(self, name: str) -> None:
        self._run(f"unload {name}", lambda c: c.unload(name))

    @command
    def move(self, name: str, gpu: str) -> None:
        self._run(f"move {name}", lambda c: c.move(name, gpu))

    @command
    def reload(self, name: str) -> None:
        self._run(f"reload {name}", lambda c: c.reload(name))

    # -- freeing a GPU ------------------------------------------------------------------

    def my_processes(self, snapshot: ServerSnapshot | None) -> list[tuple[int, int, GpuProcess]]:
        """(gpu index, pid, process) for processes of this user that are not our model workers.
        Other users' processes are never offered."""
        me = getpass.getuser()
        ours = set(self.client.worker_pids()) if self.client else set()
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
        if isinstance(self.telemetry, SimulatedServer):
            self.telemetry.release(pid)
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

    # -- chats --------------------------------------------------------------------------

    def models(self) -> list[ModelView]:
        return self.client.models() if self.client is not None else []

    def ready_models(self) -> list[str]:
        return [v.name for v in self.models() if v.ready]

    async def session(self, name: str) -> ChatSession:
        """The conversation with `name`, created (and journaled) on first use."""
        assert self.client is not None
        s = self.sessions.get(name)
        if s is None:
            view = self.client.model(name)
            assert view is not None
            gen = dict(view.request.generation)
            system = gen.pop("system_prompt", None)
            s = ChatSession(self.client, name, view.kind, system, gen)
            self.sessions[name] = s
        return s

    def describer_session(self) -> ChatSession | None:
        """Who describes an image for another conversation (chat/session.py's one rule)."""
        return ready_describer(self.client) if self.client is not None else None
