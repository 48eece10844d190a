"""The gputui application: a factory, the polling loop, the event follower, screens.

GPU state is polled on a thread (NVML calls can block for a long time on a sick GPU), and the
latest snapshot is handed to the UI thread; keys are never stuck behind a poll. Models are
reached only through the client seam (gputui.api.Client): commands return typed results, and
one Textual worker follows the client's numbered event stream to redraw the models table and
the event log. Models run in worker processes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, ScreenStackError
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from gputui.api.client import Client
from gputui.api.views import Event
from gputui.core.snapshot import ServerSnapshot, mark_ours
from gputui.core.text import visible
from gputui.hardware.base import GpuTelemetry
from gputui.tui.commands import ModelCommands
from gputui.tui.controller import ModelController
from gputui.tui.screens.dashboard import SIMULATED_BANNER, DashboardScreen

__all__ = ["GpuTuiApp", "make_app", "SIMULATED_BANNER"]


class GpuTuiApp(App[None]):
    """Live GPU dashboard, with the models of a scheduler reached through a client."""

    TITLE = "gputui"
    # Toasts sit above the chat's input and the footer (the input is 3 lines), not on them.
    CSS = "ToastRack { margin-bottom: 4; }"
    COMMANDS = App.COMMANDS | {ModelCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("r", "refresh_now", "Refresh", show=False),
        Binding("f", "toggle_side", "Panel"),
    ]

    def __init__(
        self,
        telemetry: GpuTelemetry,
        *,
        interval: float = 0.5,
        client: Client | None = None,
        lock_note: str | None = None,
        startup_profile: str | None = None,
        handle_signals: bool = False,
        attached: bool = False,
        theme: str | None = None,
    ) -> None:
        super().__init__()
        self.wanted_theme = theme  # from the settings file, applied once mounted
        self.handle_signals = handle_signals  # the real terminal: SIGTERM/SIGHUP exit cleanly
        # attached to a server: quitting (or losing the terminal) leaves its models serving
        self.attached = attached
        self.telemetry = telemetry
        self.interval = interval
        self.simulated = telemetry.backend == "simulated"
        self.client = client
        self.controller = ModelController(self, client, lock_note)
        self.startup_profile = startup_profile
        from gputui.tui.widgets.models_panel import ModelsPanel

        self.dashboard = DashboardScreen(self.simulated, ModelsPanel)
        self.snapshot: ServerSnapshot | None = None
        self.snapshots_applied = 0  # for tests: how many refreshes reached the screen
        self.events_seen = 0  # the last event number drawn (a reconnect follows from there)
        self._wake = threading.Event()
        self._applied_at = time.monotonic()
        self._started_at = time.time()
        if self.simulated:
            self.sub_title = "SIMULATED"

    def notify(self, message: str, *, title: str = "", severity: Any = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Every toast, from any screen or widget, shows its text literally: messages carry outside
        text (error text, model, file and process names), so markup is off for all of them and
        control characters are drawn as symbols. (`markup` is accepted and ignored.)"""
        super().notify(visible(message), title=visible(title, one_line=True), severity=severity,
                       timeout=timeout, markup=False)

    def action_help_quit(self) -> None:
        """Ctrl-C: Textual's own hint is written in markup, which our toasts show literally
        ("Press [b]ctrl+q[/b]"); the same hint in plain words."""
        keys = [key for key, b in self.active_bindings.items() if b.binding.action in ("quit", "app.quit")]
        self.notify(f"Press {keys[0] if keys else 'q'} to quit", title="Do you want to quit?")

    def get_default_screen(self) -> DashboardScreen:
        return self.dashboard

    def on_mount(self) -> None:
        if self.wanted_theme:
            if self.wanted_theme in self.available_themes:
                self.theme = self.wanted_theme
            else:
                self.notify(f"settings: no theme {self.wanted_theme!r}; themes: {', '.join(sorted(self.available_themes))}",
                            severity="warning", timeout=15)
        if self.handle_signals:
            import asyncio
            import signal

            # exit as q does, so the terminal gets its screen back (no alternate screen or mouse
            # reporting left on) and the models are unloaded, not orphaned
            for sig in (signal.SIGTERM, signal.SIGHUP):
                asyncio.get_running_loop().add_signal_handler(sig, self.exit)
        self.poll_loop()
        self.set_interval(1.0, self._check_stale)
        if self.client is not None:
            self.follow_events()
            self.run_worker(self.client.start(), group="client", exit_on_error=False, name="start the scheduler")
        if self.client is None:  # said for as long as it holds, not only in a toast that fades
            self.dashboard.mode_note = "MONITOR ONLY (GPU actions off)"
        if self.controller.lock_note:
            self.notify(self.controller.lock_note, severity="warning" if self.client is None else "information",
                        timeout=15)
        if self.startup_profile:
            self.apply_profile(self.startup_profile)

    async def on_unmount(self) -> None:
        self._wake.set()  # let the poll thread leave its wait now, not at the next tick
        if self.client is not None and not self.attached:
            await self.client.close()  # the embedded scheduler ends with the app (an attached client's
            # caller detaches it: the server and its models go on)

    async def action_quit(self) -> None:
        """q: with models loaded in a server, ask once - leave them serving (the default) or
        unload them and stop the server. In a form q is nothing (Esc closes it): a list or a
        button there does not take letters, and a stray q must not end the app."""
        from textual.screen import ModalScreen

        if isinstance(self.screen, ModalScreen):
            return
        loaded = [v.name for v in self.controller.models() if v.ready] if self.attached else []
        if not loaded:
            self.exit()
            return
        from gputui.tui.screens.forms import QuitForm

        def chosen(choice: str | None) -> None:
            if choice == "leave":
                self.exit()
            elif choice == "stop":
                self.run_worker(self._stop_server_and_exit(), group="quit", exit_on_error=False, name="stop the server")

        self.push_screen(QuitForm(loaded, demo=self.simulated), chosen)

    async def _stop_server_and_exit(self) -> None:
        client: Any = self.client
        for view in self.controller.models():
            if view.ready:
                await client.unload(view.name)
        await client.shutdown()
        self.exit()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.report_failed_command(event)

    def report_failed_command(self, event: Worker.StateChanged) -> None:
        """The one place a failed command is reported: every command runs in a Textual worker
        with exit_on_error=False, so a bug in one is a message and the app (with every model it
        serves) stays up. (Widgets that own workers forward their StateChanged here: it does not
        bubble.)"""
        worker = event.worker
        if event.state == WorkerState.ERROR and worker.error is not None:
            what = worker.name or worker.group
            self.notify(f"{what} failed: {type(worker.error).__name__}: {worker.error}", severity="error", timeout=15)

    # -- polling ----------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="poll", name="nvml-poll")
    def poll_loop(self) -> None:
        """Take a snapshot every `interval` seconds on this thread; never touch widgets here."""
        from textual.worker import get_current_worker

        worker = get_current_worker()
        while not worker.is_cancelled:
            started = time.monotonic()
            snap = self._take_snapshot()
            if worker.is_cancelled:
                return
            self.call_from_thread(self.apply_snapshot, snap)
            self._wake.wait(max(0.0, self.interval - (time.monotonic() - started)))
            self._wake.clear()

    def _take_snapshot(self) -> ServerSnapshot:
        try:
            snap = self.telemetry.snapshot()
        except Exception as e:  # a reader bug must not take the dashboard down
            snap = ServerSnapshot(time.time(), self.telemetry.backend, error=f"{type(e).__name__}: {e}")
        pids = dict(self.client.worker_pids()) if self.client is not None else {}  # an immutable snapshot
        return mark_ours(snap, pids)

    def action_refresh_now(self) -> None:
        """Poll now instead of at the next tick (on the poll thread: the UI never waits)."""
        self._wake.set()

    def apply_snapshot(self, snap: ServerSnapshot) -> None:
        self.snapshot = snap
        self._applied_at = time.monotonic()
        try:
            screen = self.screen
        except ScreenStackError:  # the poll's last picture can land while the app is closing
            return
        self.dashboard.show_snapshot(snap, self.interval)
        show = getattr(screen, "show_snapshot", None)
        if screen is not self.dashboard and show is not None:
            show(snap)
        self.snapshots_applied += 1

    def _check_stale(self) -> None:
        """Stale = no new picture for three refresh intervals (on our own monotonic clock, so a
        reader with another idea of the time of day is not called stale). Also says, once,
        which of our files and folders had to be made private."""
        from gputui.paths import take_notes

        for note in take_notes():
            self.notify(note, severity="warning", timeout=15)
        if self.snapshot is None:
            return
        age = time.monotonic() - self._applied_at
        if age > max(3 * self.interval, 2.0):
            self.dashboard.set_status(f"⚠ GPU data is stale ({age:.0f}s old): the GPU reader is not answering")

    def action_toggle_side(self) -> None:
        self.dashboard.toggle_side()

    # -- the client's events ------------------------------------------------------------

    @work(group="events", exclusive=True, exit_on_error=False, name="follow the scheduler")
    async def follow_events(self) -> None:
        assert self.client is not None
        async for ev in self.client.events(self.events_seen):
            self.show_event(ev)
            self.events_seen = ev.seq

    def show_event(self, ev: Event) -> None:
        from gputui.api.views import ModelView
        from gputui.tui.widgets.models_panel import ModelsPanel

        panels = list(self.dashboard.query(ModelsPanel))
        if ev.type == "model":
            for panel in panels:
                panel.show_model(ev.view())
        elif ev.type == "reset":
            views = [ModelView.from_json(data) for data in ev.data.get("models", [])]
            for panel in panels:
                panel.show_only(views)
        elif ev.type == "timeline":
            for panel in panels:
                panel.log_event(ev.data)
            if ev.data.get("event") == "server_gone":
                self.notify(f"{ev.data.get('message')}", severity="warning", timeout=None)
            elif ev.data.get("event") == "reconnected":
                self.notify(f"attached again to your gputui server (pid {ev.data.get('pid')})")
            if ev.data.get("event") == "profile_step" and ev.t >= self._started_at:  # live, not the log's replay
                outcome = ev.data.get("outcome")
                severity = "error" if outcome == "failed" else "warning" if outcome in ("kept", "skipped") else "information"
                self.notify(f"{ev.model}: {ev.data.get('message')}", severity=severity,
                            timeout=None if severity == "information" else 12)

    # -- profiles -----------------------------------------------------------------------

    def profile_names(self) -> list[str]:
        from gputui.paths import profile_names

        return profile_names()

    @work(group="profile", exclusive=True, exit_on_error=False, name="apply profile")
    async def apply_profile(self, name: str) -> None:
        from gputui.core.profiles import ProfileError
        from gputui.paths import load_named_profile

        if not self.controller.usable():
            return
        assert self.client is not None
        try:
            profile = load_named_profile(name)
        except ProfileError as e:
            self.notify(str(e), severity="error", timeout=12)
            return
        self.notify(f"applying profile {profile.name}")
        from dataclasses import replace

        from gputui.core.requests import for_the_dashboard

        profile = replace(profile, models=tuple(for_the_dashboard(m) for m in profile.models))
        await self.client.apply_profile(profile)  # each step arrives as a profile_step event

    @work(group="profile", exit_on_error=False, name="save profile")
    async def save_profile(self, name: str) -> None:
        import asyncio

        from gputui.api.client import CommandRefused
        from gputui.core.profiles import ProfileError, save_profile, save_target
        from gputui.paths import user_profiles_dir

        if self.client is None:
            return
        try:
            stem, path = save_target(name, user_profiles_dir())
            profile = await self.client.current_profile(stem)
            await asyncio.to_thread(save_profile, profile, path)
        except (ProfileError, CommandRefused, OSError) as e:
            self.notify(f"not saved: {e}", severity="error")
            return
        self.notify(f"saved to {path}")

    # -- chat ---------------------------------------------------------------------------

    def _ready_or_say(self, name: str) -> Any:
        view = self.client.model(name) if self.client is not None else None
        why = f"no model named {name!r} is loaded" if view is None else view.not_ready_reason()
        if why:
            self.notify(why, severity="error")
            return None
        return view

    @work(group="chat-open", exit_on_error=False, name="open chat")
    async def open_chat(self, name: str) -> None:
        from gputui.tui.screens.chat import ChatScreen
        from gputui.tui.widgets.chat_pane import ChatPane

        if not self.controller.usable() or self._ready_or_say(name) is None:
            return
        session = await self.controller.session(name)
        pane = ChatPane(session, describer=self.controller.describer_session)
        await self.push_screen(ChatScreen([pane], self.simulated))
        if self.snapshot is not None:
            self.screen.show_snapshot(self.snapshot)  # type: ignore[attr-defined]

    @work(group="chat-open", exit_on_error=False, name="reopen chat")
    async def reopen_chat(self, path: Path) -> None:
        """Continue a past conversation (from its journal) with its model, if that is ready."""
        import asyncio

        from gputui.chat.session import ChatSession
        from gputui.journal import read_transcript
        from gputui.tui.screens.chat import ChatScreen
        from gputui.tui.widgets.chat_pane import ChatPane

        transcript = await asyncio.to_thread(read_transcript, path)  # can be a big file
        model = str(transcript.meta.get("model"))
        if not self.controller.usable():
            return
        view = self._ready_or_say(model)
        if view is None:
            return
        assert self.client is not None
        session = ChatSession.resume(self.client, view.kind, transcript)
        self.controller.sessions[model] = session
        pane = ChatPane(session, describer=self.controller.describer_session)
        await self.push_screen(ChatScreen([pane], self.simulated))
        pane.show_history(transcript.messages)
        if transcript.skipped_lines:
            pane.note(f"{transcript.skipped_lines} unreadable line(s) in the journal were skipped")

    def switch_chat(self, current: str) -> None:
        ready = self.controller.ready_models()
        if len(ready) < 2:
            self.notify("no other ready model to switch to", severity="warning")
            return
        nxt = ready[(ready.index(current) + 1) % len(ready)] if current in ready else ready[0]
        self.pop_screen()
        self.open_chat(nxt)

    @work(group="chat-open", exit_on_error=False, name="open a second chat")
    async def split_chat(self, screen: Any) -> None:
        from gputui.tui.widgets.chat_pane import ChatPane

        shown = {p.session.model for p in screen.panes}
        others = [m for m in self.controller.ready_models() if m not in shown]
        if not others or len(screen.panes) >= 2:
            self.notify("no other ready model to open beside this one", severity="warning")
            return
        session = await self.controller.session(others[0])
        await screen.add_pane(ChatPane(session, describer=self.controller.describer_session))

    def show_doctor(self) -> None:
        from gputui.tui.screens.doctor import DoctorScreen

        # the snapshot with our workers marked, so the user's own models are not "other users"
        self.push_screen(DoctorScreen(self._take_snapshot, self.simulated))


def make_app(telemetry: GpuTelemetry, **kwargs: Any) -> GpuTuiApp:
    """Build the real app around any telemetry and client (tests and snapshots pass fakes)."""
    return GpuTuiApp(telemetry, **kwargs)
