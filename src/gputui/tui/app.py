"""The gputui application: a factory, the polling loop, and the key bindings.

GPU state is polled on a thread (NVML calls can block for a long time on a sick GPU), and the
latest snapshot is handed to the UI thread; keys are never stuck behind a poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Footer, Header, Static

from gputui.core.snapshot import ServerSnapshot, mark_ours
from gputui.hardware.base import GpuTelemetry
from gputui.tui.widgets.gpu_panel import GpuPanel

SIMULATED_BANNER = "SIMULATED — demo GPUs, not your hardware"


class GpuTuiApp(App[None]):
    """Live GPU dashboard with an embedded model scheduler."""

    TITLE = "gputui"
    CSS = """
    #banner { background: $warning; color: $text; text-style: bold; height: 1; width: 100%;
              content-align: center middle; }
    #main { height: 1fr; }
    #gpus { width: 2fr; min-width: 40; }
    #side { width: 1fr; min-width: 30; border-left: solid $primary; }
    #status-line { height: 1; color: $text-muted; }
    """
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
        self._side_panel = side_panel
        self.snapshot: ServerSnapshot | None = None
        self.snapshots_applied = 0  # for tests: how many refreshes reached the screen
        self._panels: dict[int, GpuPanel] = {}
        if self.simulated:
            self.sub_title = "SIMULATED"

    def compose(self) -> ComposeResult:
        yield Header()
        if self.simulated:
            yield Static(SIMULATED_BANNER, id="banner", markup=False)
        with Horizontal(id="main"):
            yield VerticalScroll(id="gpus")
            if self._side_panel is not None:
                yield self._side_panel()
        yield Static("", id="status-line", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.poll_loop()
        self.set_interval(1.0, self._check_stale)

    # -- polling ----------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="poll", name="nvml-poll")
    def poll_loop(self) -> None:
        """Take a snapshot every `interval` seconds on this thread; never touch widgets here."""
        worker = self._current_worker()
        while worker is None or not worker.is_cancelled:
            started = time.monotonic()
            snap = self._take_snapshot()
            self.call_from_thread(self.apply_snapshot, snap)
            time.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def _current_worker(self) -> Any:
        from textual.worker import get_current_worker

        try:
            return get_current_worker()
        except RuntimeError:
            return None

    def _take_snapshot(self) -> ServerSnapshot:
        try:
            snap = self.telemetry.snapshot()
        except Exception as e:  # a reader bug must not take the dashboard down
            snap = ServerSnapshot(time.time(), self.telemetry.backend, error=f"{type(e).__name__}: {e}")
        return mark_ours(snap, self._worker_pids())

    def action_refresh_now(self) -> None:
        self.apply_snapshot(self._take_snapshot())

    def apply_snapshot(self, snap: ServerSnapshot) -> None:
        self.snapshot = snap
        container = self.query_one("#gpus", VerticalScroll)
        if snap.error and not snap.gpus:
            self._status(f"✖ {snap.error}; GPU actions are disabled")
        for g in snap.gpus:
            panel = self._panels.get(g.index)
            if panel is None:
                panel = GpuPanel(g, id=f"gpu-{g.index}")
                self._panels[g.index] = panel
                container.mount(panel)
            else:
                panel.show(g)
        self.snapshots_applied += 1
        if not snap.error:
            driver = f"driver {snap.driver_version}  CUDA {snap.cuda_driver_version}"
            prefix = "SIMULATED  " if self.simulated else ""
            self._status(f"{prefix}{len(snap.gpus)} GPU(s)  {driver}  refresh {self.interval:g}s")

    def _check_stale(self) -> None:
        snap = self.snapshot
        if snap is not None and time.time() - snap.taken_at > max(3 * self.interval, 2.0):
            age = time.time() - snap.taken_at
            self._status(f"⚠ GPU data is stale ({age:.0f}s old): the GPU reader is not answering")

    def _status(self, text: str) -> None:
        self.query_one("#status-line", Static).update(Text(text))

    def action_toggle_side(self) -> None:
        for side in self.query("#side"):
            side.display = not side.display


def make_app(telemetry: GpuTelemetry, **kwargs: Any) -> GpuTuiApp:
    """Build the real app around any telemetry (tests and snapshots pass fakes)."""
    return GpuTuiApp(telemetry, **kwargs)
