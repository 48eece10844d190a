"""The main screen: a panel per GPU, the side panel (models, events) and a status line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from gputui.core.snapshot import ServerSnapshot
from gputui.tui.outside import outside, outside_block
from gputui.tui.widgets.gpu_panel import GpuPanel

SIMULATED_BANNER = "SIMULATED — demo GPUs, not your hardware"


class DashboardScreen(Screen[None]):
    BINDINGS = [
        Binding("l", "load", "Load"),
        Binding("u", "unload", "Unload"),
        Binding("m", "move", "Move"),
        Binding("c", "chat", "Chat"),
        Binding("R", "reload", "Reload"),
        Binding("s", "save_profile", "Save profile"),
        Binding("d", "doctor", "Doctor"),
    ]

    DEFAULT_CSS = """
    #banner { background: $warning; color: $text; text-style: bold; height: 1; width: 100%;
              content-align: center middle; }
    #main { height: 1fr; }
    #gpus { width: 1fr; min-width: 40; }
    #side { width: 45%; min-width: 30; border-left: solid $primary; }
    #status-line { height: 1; color: $text-muted; }
    """

    def __init__(self, simulated: bool, side_panel: Callable[[], Any] | None) -> None:
        super().__init__(id="dashboard")
        self.simulated = simulated
        self._side_panel = side_panel
        self._panels: dict[int, GpuPanel] = {}
        self._hosts: set[str] = set()  # hosts with a header already
        self._side_forced: bool | None = None  # the user's choice with f wins over the width rule

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

    NARROW = 110  # below this many columns the side panel starts hidden (f shows it)

    def on_resize(self, event: events.Resize) -> None:
        if self._side_forced is None:
            for side in self.query("#side"):
                side.display = event.size.width >= self.NARROW

    def toggle_side(self) -> None:
        for side in self.query("#side"):
            side.display = not side.display
            self._side_forced = bool(side.display)

    def show_snapshot(self, snap: ServerSnapshot, interval: float) -> None:
        try:
            container = self.query_one("#gpus", VerticalScroll)
        except NoMatches:  # not composed yet, or being torn down at exit
            return
        for g in snap.gpus:
            panel = self._panels.get(g.index)
            if panel is None:
                if g.host is not None and g.host not in self._hosts:  # a cluster: GPUs under their host
                    self._hosts.add(g.host)
                    container.mount(Static(outside(f"host {g.host}", style="bold reverse"), classes="host", markup=False))
                panel = GpuPanel(g, id=f"gpu-{g.index}")
                self._panels[g.index] = panel
                container.mount(panel)
            else:
                panel.show(g)
        if snap.error and not snap.gpus and not self._panels:
            self._show_no_gpus(container, snap.error)
        if snap.error:
            self.set_status(f"✖ {snap.error}; GPU actions are disabled")
        else:
            prefix = "SIMULATED  " if self.simulated else ""
            hosts = f" on {len(self._hosts)} hosts" if len(self._hosts) > 1 else ""
            self.set_status(
                f"{prefix}{len(snap.gpus)} GPU(s){hosts}  driver {snap.driver_version}  "
                f"CUDA {snap.cuda_driver_version}  refresh {interval:g}s"
            )

    def _show_no_gpus(self, container: VerticalScroll, reason: str) -> None:
        """Nothing to draw: say why where the GPU panels would be."""
        text = outside_block(f"No GPU can be read here.\n\n{reason}\n\nPast conversations, profiles and "
                             "`gputui doctor` still work; model actions are off.", style="bold")
        try:
            container.query_one("#no-gpus", Static).update(text)
        except NoMatches:
            container.mount(Static(text, id="no-gpus", markup=False))

    def set_status(self, text: str) -> None:
        if text == getattr(self, "_status_text", None):
            return
        self._status_text = text
        try:
            self.query_one("#status-line", Static).update(outside(text), layout=False)
        except NoMatches:
            pass

    # -- model commands (the selected row of the models table) ------------------------------

    def _selected(self) -> str | None:
        from gputui.tui.widgets.models_panel import ModelsPanel

        panels = list(self.query(ModelsPanel))
        name = panels[0].selected if panels else None
        if name is None:
            self.notify("no model selected (load one with l)", severity="warning")
        return name

    def action_load(self) -> None:
        from gputui.tui.screens.forms import LoadForm

        app: Any = self.app
        if app.controller.usable():
            self.app.push_screen(LoadForm(app.snapshot), lambda spec: spec and app.controller.load(spec))

    def action_unload(self) -> None:
        name = self._selected()
        if name:
            self.app.controller.unload(name)  # type: ignore[attr-defined]

    def action_reload(self) -> None:
        name = self._selected()
        if name:
            self.app.controller.reload(name)  # type: ignore[attr-defined]

    def action_move(self) -> None:
        from gputui.tui.screens.forms import GpuForm

        app: Any = self.app
        name = self._selected()
        if name and app.controller.usable():
            self.app.push_screen(GpuForm(app.snapshot, f"Move {name} to"),
                                 lambda gpu: gpu and app.controller.move(name, gpu))

    def action_chat(self) -> None:
        name = self._selected()
        if name:
            self.app.open_chat(name)  # type: ignore[attr-defined]

    def action_save_profile(self) -> None:
        from gputui.tui.screens.forms import TextForm

        app: Any = self.app
        self.app.push_screen(TextForm("Save the current placement as profile", "my-placement"),
                             lambda name: name and app.save_profile(name))

    def action_doctor(self) -> None:
        self.app.show_doctor()  # type: ignore[attr-defined]

    def confirm_end_process(self, pid: int, proc: Any) -> None:
        from gputui.tui.screens.forms import ConfirmForm

        app: Any = self.app
        question = f"End process {pid} ({proc.command or '?'}, {(proc.used_bytes or 0) >> 20} MiB)?"
        self.app.push_screen(ConfirmForm(question), lambda yes: yes and app.controller.end_process(pid))
