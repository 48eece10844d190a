"""The diagnosis screen: findings for this machine, and a box to paste an error message into."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from gputui.tui.outside import outside, outside_block
from gputui.tui.screens.dashboard import SIMULATED_BANNER

STYLE = {"ok": "green", "info": "cyan", "warning": "yellow", "error": "red bold"}


class DoctorScreen(Screen[None]):
    DEFAULT_CSS = """
    #findings { height: 1fr; }
    #explanation { height: auto; max-height: 16; border-top: solid $primary; }
    """
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, take_snapshot: Callable[[], Any], simulated: bool) -> None:
        super().__init__()
        self.take_snapshot, self.simulated = take_snapshot, simulated

    def compose(self) -> ComposeResult:
        yield Header()
        if self.simulated:
            yield Static(SIMULATED_BANNER, id="banner", markup=False)
        yield VerticalScroll(Static("running checks…", id="findings-text", markup=False), id="findings")
        yield Static("", id="explanation", markup=False)
        yield Input(placeholder="paste an error message (e.g. CUBLAS_STATUS_NOT_INITIALIZED ...) and press Enter",
                    id="paste")
        yield Footer()

    def on_mount(self) -> None:
        # the box has the focus: a paste lands in it, and typed letters are text, not shortcuts
        # (q would quit the app and unload every model)
        self.query_one("#paste", Input).focus()
        self.run_checks()

    def on_worker_state_changed(self, event: Any) -> None:
        self.app.report_failed_command(event)  # type: ignore[attr-defined]

    @work(thread=True, group="doctor", exclusive=True, exit_on_error=False, name="doctor checks")
    def run_checks(self) -> None:
        from gputui.doctor.checks import run_checks

        findings = run_checks(self.take_snapshot())
        text = Text()
        for f in findings:
            text.append(f"{f.severity:>7} ", style=STYLE.get(f.severity, ""))
            text.append(outside(f"{f.title}: {f.evidence}") + "\n")
            if f.fix:
                text.append(outside(f"        fix: {f.fix}", style="dim") + "\n")
        self.app.call_from_thread(self.query_one("#findings-text", Static).update, text)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one("#explanation", Static).update("reading the GPUs…")
        self.explain(event.value)

    @work(thread=True, group="doctor-explain", exclusive=True, exit_on_error=False, name="doctor explain")
    def explain(self, error_text: str) -> None:
        """On a thread: the snapshot may be a request to the server, answered on the UI's own
        loop (an attached --demo dashboard) - asked from the loop itself, it froze the
        dashboard until it timed out and then said there was no NVML."""
        from gputui.doctor.explain import explain

        ex = explain(error_text, self.take_snapshot())
        self.app.call_from_thread(self.query_one("#explanation", Static).update, outside_block(ex.text()))
