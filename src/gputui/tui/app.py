"""The gputui application: screens, and the messages that reach it.

GPU state is polled on a thread (poller.py) and posted as SnapshotTaken; keys are never stuck
behind a poll. Models are reached only through the client seam (gputui.api.Client): commands
return typed results (controller.py), and one Textual worker follows the client's numbered event
stream, posting each event (event_view.py draws it). Screens reach the app by message
(messages.py); chats and profiles have their own modules. Models run in worker processes.
"""

from __future__ import annotations

import time
from typing import Any

from textual import work
from textual.app import App, ScreenStackError
from textual.binding import Binding
from textual.worker import Worker, WorkerState, get_current_worker

from gputui.api.client import Client
from gputui.core.snapshot import ServerSnapshot
from gputui.core.text import visible
from gputui.hardware.base import GpuTelemetry
from gputui.tui import messages
from gputui.tui.chats import Chats
from gputui.tui.commands import ModelCommands
from gputui.tui.controller import ModelController
from gputui.tui.event_view import show_event
from gputui.tui.poller import SnapshotPoller
from gputui.tui.profile_actions import ProfileActions
from gputui.tui.quitting import exit_on_signals, quit_or_ask
from gputui.tui.screens.dashboard import SIMULATED_BANNER, DashboardScreen
from gputui.tui.widgets.models_panel import ModelsPanel

__all__ = ["GpuTuiApp", "make_app", "SIMULATED_BANNER"]


class GpuTuiApp(App[None]):
    """Live GPU dashboard, with the models of a scheduler reached through a client."""

    TITLE = "gputui"
    CSS_PATH = "gputui.tcss"  # what every screen shares: the SIMULATED banner, the toasts' place
    COMMANDS = App.COMMANDS | {ModelCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("r", "refresh_now", "Refresh", show=False),
        Binding("f", "toggle_side", "Panel"),
    ]

    def __init__(self, telemetry: GpuTelemetry, *, interval: float = 0.5, client: Client | None = None,
                 lock_note: str | None = None, startup_profile: str | None = None, handle_signals: bool = False,
                 attached: bool = False, theme: str | None = None) -> None:
        super().__init__()
        self.wanted_theme = theme  # from the settings file, applied once mounted
        self.handle_signals = handle_signals  # the real terminal: SIGTERM/SIGHUP exit cleanly
        # attached to a server: quitting (or losing the terminal) leaves its models serving
        self.attached = attached
        self.telemetry = telemetry
        self.interval = interval
        self.simulated = telemetry.backend == "simulated"
        self.client = client
        self.controller = ModelController(self, telemetry, client, lock_note)
        self.chats = Chats(self, self.controller, self.simulated, lambda: self.snapshot)
        self.profiles = ProfileActions(self, self.controller)
        self.poller = SnapshotPoller(telemetry, client, interval)
        self.startup_profile = startup_profile
        self.dashboard = DashboardScreen(self.simulated, ModelsPanel)
        self.snapshot: ServerSnapshot | None = None
        self.snapshots_applied = 0  # for tests: how many refreshes reached the screen
        self.events_seen = 0  # the last event number drawn (a reconnect follows from there)
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
        if self.wanted_theme in self.available_themes:
            self.theme = self.wanted_theme
        elif self.wanted_theme:
            self.notify(f"settings: no theme {self.wanted_theme!r}; themes: {', '.join(sorted(self.available_themes))}",
                        severity="warning", timeout=15)
        if self.handle_signals:
            exit_on_signals(self)
        self.poll_loop()
        self.set_interval(1.0, self._check_stale)
        if self.client is not None:
            self.follow_events()
            self.run_worker(self.client.start(), group="client", exit_on_error=False, name="start the scheduler")
        else:  # said for as long as it holds, not only in a toast that fades
            self.dashboard.mode_note = "MONITOR ONLY (GPU actions off)"
        if self.controller.lock_note:
            self.notify(self.controller.lock_note, severity="warning" if self.client is None else "information",
                        timeout=15)
        if self.startup_profile:
            self.profiles.apply(self.startup_profile)

    async def on_unmount(self) -> None:
        self.poller.wake()  # let the poll thread leave its wait now, not at the next tick
        if self.client is not None and not self.attached:
            await self.client.close()  # the embedded scheduler ends with the app (an attached client's
            # caller detaches it: the server and its models go on)

    async def action_quit(self) -> None:
        quit_or_ask(self, self.controller, attached=self.attached, demo=self.simulated)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.report_failed_command(event)

    def report_failed_command(self, event: Worker.StateChanged) -> None:
        """The one place a failed command is reported: every command runs in a Textual worker with
        exit_on_error=False, so a bug in one is a message and the app (with its models) stays up.
        (Widgets that own workers forward their StateChanged here: it does not bubble.)"""
        worker = event.worker
        if event.state == WorkerState.ERROR and worker.error is not None:
            what = worker.name or worker.group
            self.notify(f"{what} failed: {type(worker.error).__name__}: {worker.error}", severity="error", timeout=15)

    # -- the GPU picture --------------------------------------------------------------

    @work(thread=True, exclusive=True, group="poll", name="nvml-poll")
    def poll_loop(self) -> None:
        worker = get_current_worker()
        self.poller.run(self.post_message, lambda: worker.is_cancelled)

    def action_refresh_now(self) -> None:
        self.poller.wake()

    def on_snapshot_taken(self, message: messages.SnapshotTaken) -> None:
        self.apply_snapshot(message.snapshot)

    def apply_snapshot(self, snap: ServerSnapshot) -> None:
        self.snapshot = snap
        self._applied_at = time.monotonic()
        try:
            screen = self.screen
        except ScreenStackError:  # the poll's last picture can land while the app is closing
            return
        self.dashboard.show_snapshot(snap, self.interval)
        show = getattr(screen, "show_snapshot", None)  # a chat screen shows the GPUs too
        if screen is not self.dashboard and show is not None:
            show(snap)
        self.snapshots_applied += 1

    def _check_stale(self) -> None:
        """Each second: the stale-data warning, and (once) which of our files had to be made private."""
        from gputui.paths import take_notes

        for note in take_notes():
            self.notify(note, severity="warning", timeout=15)
        stale = self.poller.stale_note(self._applied_at) if self.snapshot is not None else None
        if stale:
            self.dashboard.set_status(stale)

    def action_toggle_side(self) -> None:
        self.dashboard.toggle_side()

    # -- the client's events ------------------------------------------------------------

    @work(group="events", exclusive=True, exit_on_error=False, name="follow the scheduler")
    async def follow_events(self) -> None:
        assert self.client is not None
        async for ev in self.client.events(self.events_seen):
            self.post_message(messages.SchedulerEvent(ev))
            self.events_seen = ev.seq

    def on_scheduler_event(self, message: messages.SchedulerEvent) -> None:
        show_event(self, self.dashboard, message.event, self._started_at)

    # -- what screens ask for -----------------------------------------------------------

    def on_open_chat(self, m: messages.OpenChat) -> None:
        self.chats.open(m.model)

    def on_reopen_chat(self, m: messages.ReopenChat) -> None:
        self.chats.reopen(m.path)

    def on_switch_chat(self, m: messages.SwitchChat) -> None:
        self.chats.switch(m.current)

    def on_split_chat(self, m: messages.SplitChat) -> None:
        self.chats.split(m.screen)

    def on_apply_profile(self, m: messages.ApplyProfile) -> None:
        self.profiles.apply(m.name)

    def on_save_profile(self, m: messages.SaveProfile) -> None:
        self.profiles.save(m.name)

    def on_show_doctor(self, _m: messages.ShowDoctor) -> None:
        from gputui.tui.screens.doctor import DoctorScreen

        # the snapshot with our workers marked, so the user's own models are not "other users"
        self.push_screen(DoctorScreen(self.poller.take, self.simulated))


def make_app(telemetry: GpuTelemetry, **kwargs: Any) -> GpuTuiApp:
    """Build the real app around any telemetry and client (tests and snapshots pass fakes)."""
    return GpuTuiApp(telemetry, **kwargs)
