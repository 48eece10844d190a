"""The gputui application: a factory, the polling loop, and the key bindings.

GPU state is polled on a thread (NVML calls can block for a long time on a sick GPU), and the
latest snapshot is handed to the UI thread; keys are never stuck behind a poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from textual import work
from textual.app import App
from textual.binding import Binding

from gputui.core.snapshot import ServerSnapshot, mark_ours
from gputui.hardware.base import GpuTelemetry
from gputui.tui.screens.dashboard import SIMULATED_BANNER, DashboardScreen

__all__ = ["GpuTuiApp", "make_app", "SIMULATED_BANNER"]


class GpuTuiApp(App[None]):
    """Live GPU dashboard with an embedded model scheduler."""

    TITLE = "gputui"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("r", "refresh_now", "Refresh"),
        Binding("f", "toggle_side", "Side panel"),
    ]

    def __init__(
        self,
        telemetry: GpuTelemetry,
        *,
        interval: float = 0.5,
        worker_pids: Callable[[], dict[int, str]] | None = None,
        side_panel: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__()
        self.telemetry = telemetry
        self.interval = interval
        self.simulated = telemetry.backend == "simulated"
        self._worker_pids = worker_pids or (lambda: {})
        self.dashboard = DashboardScreen(self.simulated, side_panel)
        self.snapshot: ServerSnapshot | None = None
        self.snapshots_applied = 0
        self._wake = threading.Event()  # for tests: how many refreshes reached the screen
        if self.simulated:
            self.sub_title = "SIMULATED"

    def get_default_screen(self) -> DashboardScreen:
        return self.dashboard

    def on_mount(self) -> None:
        self.poll_loop()
        self.set_interval(1.0, self._check_stale)

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
        return mark_ours(snap, self._worker_pids())

    def action_refresh_now(self) -> None:
        """Poll now instead of at the next tick (on the poll thread: the UI never waits)."""
        self._wake.set()

    def apply_snapshot(self, snap: ServerSnapshot) -> None:
        self.snapshot = snap
        self.dashboard.show_snapshot(snap, self.interval)
        self.snapshots_applied += 1

    def _check_stale(self) -> None:
        snap = self.snapshot
        if snap is not None and time.time() - snap.taken_at > max(3 * self.interval, 2.0):
            age = time.time() - snap.taken_at
            self.dashboard.set_status(f"⚠ GPU data is stale ({age:.0f}s old): the GPU reader is not answering")

    def action_toggle_side(self) -> None:
        for side in self.dashboard.query("#side"):
            side.display = not side.display


def make_app(telemetry: GpuTelemetry, **kwargs: Any) -> GpuTuiApp:
    """Build the real app around any telemetry (tests and snapshots pass fakes)."""
    return GpuTuiApp(telemetry, **kwargs)
