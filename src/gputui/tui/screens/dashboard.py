"""The main screen: the GPUs, the side panel (models, events) and a status line.

The GPUs are a panel each when they fit, else one line each (GpuTable: 8 GPUs and every model
fit 80x24); under NARROW columns the models panel goes below the GPUs instead of beside them,
so the models are never hidden. `v` and `f` override the automatic choices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from gputui.core.snapshot import GpuProcess, ServerSnapshot
from gputui.tui.host import DashboardHost
from gputui.tui.messages import OpenChat, SaveProfile, ShowDoctor
from gputui.tui.outside import outside, outside_block
from gputui.tui.widgets.gpu_panel import GpuPanel
from gputui.tui.widgets.gpu_table import GpuTable
from gputui.tui.widgets.lean import LeanStatic

SIMULATED_BANNER = "SIMULATED — demo GPUs, not your hardware"


class DashboardScreen(Screen[None]):
    BINDINGS = [
        Binding("l", "load", "Load"),
        Binding("u", "unload", "Unload"),
        Binding("m", "move", "Move"),
        Binding("c", "chat", "Chat"),
        Binding("R", "reload", "Reload", show=False),  # in the palette (^p): the footer must fit 80 columns
        Binding("s", "save_profile", "Save"),
        Binding("d", "doctor", "Doctor"),
        Binding("v", "toggle_view", "View"),
    ]

    DEFAULT_CSS = """
    #main { height: 1fr; }
    #gpus { width: 1fr; min-width: 40; }
    #side { width: 45%; min-width: 30; border-left: solid $primary; }
    #status-line { height: 1; color: $text-muted; }
    DashboardScreen.narrow #main { layout: vertical; }
    DashboardScreen.narrow #gpus { width: 100%; height: auto; max-height: 70%; }
    DashboardScreen.narrow #side { width: 100%; height: 1fr; min-height: 6; border-left: none;
                                    border-top: solid $primary; }
    """

    def __init__(self, simulated: bool, side_panel: Callable[[], Any] | None) -> None:
        super().__init__(id="dashboard")
        self.simulated = simulated
        self._side_panel = side_panel
        self._panels: dict[int, GpuPanel] = {}
        self._hosts: set[str] = set()  # hosts with a header already
        self._compact_forced: bool | None = None  # the user's choice with v wins over the size rule
        self.compact = False  # one line per GPU (GpuTable) instead of a panel each
        self._gpu_count = 0
        self._last_snapshot: ServerSnapshot | None = None
        self.mode_note: str | None = None  # said on the status line for as long as it holds

    def compose(self) -> ComposeResult:
        yield Header()
        if self.simulated:
            yield Static(SIMULATED_BANNER, id="banner", markup=False)
        with Horizontal(id="main"):
            with VerticalScroll(id="gpus"):
                yield GpuTable()
            if self._side_panel is not None:
                yield self._side_panel()
        yield LeanStatic("", id="status-line")
        footer = Footer()
        footer.compact = True  # (a reactive since Textual 5; the argument only since 6)
        yield footer

    NARROW = 110  # below this many columns the models panel goes below the GPUs
    PANEL_LINES = 10  # what a GPU's panel takes, borders and two processes included
    SIDE_BELOW_LINES = 10  # what the models panel keeps when it is below the GPUs

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.width < self.NARROW, "narrow")
        self._choose_view()

    def _choose_view(self) -> None:
        """Panels when every GPU's panel fits the height left for GPUs, else one line each."""
        if self._compact_forced is not None:
            compact = self._compact_forced
        else:
            height = self.size.height - 4  # header, banner or not, status line, footer
            if self.has_class("narrow") and self._side_panel is not None:
                height -= self.SIDE_BELOW_LINES
            compact = self._gpu_count * self.PANEL_LINES > height
        self.compact = compact
        for table in self.query(GpuTable):
            table.display = self.compact
        for panel in self.query("#gpus > GpuPanel, #gpus > .host"):
            panel.display = not self.compact
        if self._last_snapshot is not None and self.compact:
            for table in self.query(GpuTable):  # none while the screen is composed or torn down
                table.show(self._last_snapshot)

    def toggle_side(self) -> None:
        for side in self.query("#side"):
            side.display = not side.display

    def action_toggle_view(self) -> None:
        """v: one line per GPU, or a panel each (the choice holds until v again)."""
        self._compact_forced = not self.compact
        self._choose_view()
        if not self.compact and self._last_snapshot is not None:
            self.show_snapshot(self._last_snapshot, getattr(self.app, "interval", 0.5))

    def show_snapshot(self, snap: ServerSnapshot, interval: float) -> None:
        try:
            container = self.query_one("#gpus", VerticalScroll)
        except NoMatches:  # not composed yet, or being torn down at exit
            return
        self._last_snapshot = snap
        if len(snap.gpus) != self._gpu_count:
            self._gpu_count = len(snap.gpus)
            self._choose_view()
        if self.compact:
            for table in self.query(GpuTable):
                table.show(snap)
        for g in snap.gpus:
            panel = self._panels.get(g.index)
            if self.compact:
                if panel is not None:
                    panel.record(g)  # its history goes on while it is out of sight
                continue
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
            self._show_no_gpus(container, snap.error, snap.transient)
        elif snap.gpus:  # a reading failed (a server still starting, say) and then worked
            for note in container.query("#no-gpus"):
                note.remove()
        if snap.error and snap.transient:
            self.set_status(f"… waiting for the GPU readings ({snap.error})")
        elif snap.error:
            self.set_status(f"✖ {snap.error}; GPU actions are disabled")
        else:
            prefix = "SIMULATED  " if self.simulated else ""
            if self.mode_note:
                prefix += f"{self.mode_note}  "
            hosts = f" on {len(self._hosts)} hosts" if len(self._hosts) > 1 else ""
            # the one-line-per-GPU view has no room for names: say them here
            names = sorted({g.name for g in snap.gpus})
            kinds = f" ({names[0]})" if len(names) == 1 and self.compact else ""
            self.set_status(
                f"{prefix}{len(snap.gpus)} GPU(s){kinds}{hosts}  driver {snap.driver_version}  "
                f"CUDA {snap.cuda_driver_version}  refresh {interval:g}s"
            )

    def _show_no_gpus(self, container: VerticalScroll, reason: str, transient: bool = False) -> None:
        """Nothing to draw: say why where the GPU panels would be (or, for a reading that did not
        come in time, that it is awaited - a starting demo server is no missing GPU)."""
        if transient:
            text = outside_block(f"Waiting for the GPU readings…\n\n{reason}", style="bold")
        else:
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
        from gputui.tui.screens.forms import LoadForm, known_models

        app = cast(DashboardHost, self.app)
        if app.controller.usable():
            known = known_models([v.request for v in app.controller.models()])
            self.app.push_screen(LoadForm(app.snapshot, known), lambda spec: spec and app.controller.load(spec))

    def action_unload(self) -> None:
        """u: names the model, its GPU and memory, and asks first."""
        self._confirmed("Unload", "its worker ends and its memory goes back", lambda app, name: app.controller.unload(name))

    def action_reload(self) -> None:
        self._confirmed("Reload", "its worker is restarted: a reply in progress ends",
                        lambda app, name: app.controller.reload(name))

    def _confirmed(self, verb: str, effect: str, act: Callable[[DashboardHost, str], None]) -> None:
        from gputui.core.units import human_bytes
        from gputui.tui.screens.forms import ConfirmForm

        app = cast(DashboardHost, self.app)
        name = self._selected()
        if not name:
            return
        view = next((v for v in app.controller.models() if v.name == name), None)
        where = (f" ({view.kind}, {view.state.value}, GPU {view.gpu_label}, "
                 f"{human_bytes(view.measured_bytes or view.predicted_bytes)})") if view is not None else ""
        self.app.push_screen(ConfirmForm(f"{verb} {name}{where}? {effect[0].upper()}{effect[1:]}."),
                             lambda yes: act(app, name) if yes else None)

    def action_move(self) -> None:
        from gputui.tui.screens.forms import GpuForm

        app = cast(DashboardHost, self.app)
        name = self._selected()
        if name and app.controller.usable():
            self.app.push_screen(GpuForm(app.snapshot, f"Move {name} to"),
                                 lambda gpu: gpu and app.controller.move(name, gpu))

    def action_chat(self) -> None:
        name = self._selected()
        if name:
            self.post_message(OpenChat(name))

    def action_save_profile(self) -> None:
        from gputui.tui.screens.forms import TextForm

        def save(name: str | None) -> None:
            if name:
                self.post_message(SaveProfile(name))

        self.app.push_screen(TextForm("Save the current placement as profile", "my-placement"), save)

    def action_doctor(self) -> None:
        self.post_message(ShowDoctor())

    def confirm_end_process(self, pid: int, proc: GpuProcess) -> None:
        from gputui.tui.screens.forms import ConfirmForm

        app = cast(DashboardHost, self.app)
        question = f"End process {pid} ({proc.command or '?'}, {(proc.used_bytes or 0) >> 20} MiB)?"
        self.app.push_screen(ConfirmForm(question), lambda yes: yes and app.controller.end_process(pid))
