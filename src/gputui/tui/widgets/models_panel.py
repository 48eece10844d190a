"""The side panel: every model with its state and memory, and the lifecycle event log."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, RichLog, Static

from gputui.api.views import ModelState, ModelView, event_line
from gputui.core.units import human_pair
from gputui.tui.outside import outside

STATE_STYLE = {"ready": "green", "loading": "yellow", "queued": "yellow", "failed": "red", "crashed": "red bold",
               "unloading": "yellow", "unloaded": "dim"}


# Fixed widths: the side panel is ~64 columns in a 150-column terminal, and auto-sized columns
# grew with the longest stage seen and pushed the memory column off the panel.
COLUMNS = (("model", 10), ("kind", 8), ("state", 15), ("GPU", 3), ("pred/meas", 13))


def model_row(view: ModelView) -> tuple[Text, ...]:
    # while loading, the stage says more than the state (yellow already says "busy")
    state = view.state.value if view.state.resting or view.state is ModelState.QUEUED else view.stage
    name, stage = outside(view.name, style="bold"), outside(state, style=STATE_STYLE.get(view.state.value, ""))
    for t in (name, stage):
        t.overflow, t.no_wrap = "ellipsis", True
    return (name, outside(view.kind), stage, Text(view.gpu_label),
            Text(human_pair(view.predicted_bytes, view.measured_bytes)))


def model_note(view: ModelView) -> tuple[str, str]:
    """The line under the table for the selected model: why it failed, or why it decodes
    slower than it could (the fused step was refused or is off); ("", "") when all is well."""
    if view.state in (ModelState.FAILED, ModelState.CRASHED) and view.error:
        return f"{view.name}: {view.error}", ""
    runtime = view.runtime
    if view.ready and runtime.get("decode_note"):
        # at full speed (a split model on its staged graphs) it is news, not a warning
        style = "dim" if runtime.get("decode") == "fused" else "italic yellow"
        return f"{view.name}: {runtime['decode_note']}", style
    if view.ready and runtime.get("fused_error"):
        return f"{view.name}: stock decode graph ({runtime['fused_error']})", "italic yellow"
    return "", ""


class ModelsPanel(Vertical):
    DEFAULT_CSS = """
    ModelsPanel { height: 1fr; }
    ModelsPanel > #models { height: auto; max-height: 12; }
    ModelsPanel > #model-error { height: auto; color: $error; }
    ModelsPanel > #events { height: 1fr; border-top: solid $primary; }
    ModelsPanel > .title { text-style: bold; }
    """

    def __init__(self) -> None:
        super().__init__(id="side")
        self._rows: dict[str, ModelView] = {}

    def compose(self) -> ComposeResult:
        yield Static("Models  (predicted / measured)", classes="title", markup=False)
        table: DataTable[Text] = DataTable(id="models", cursor_type="row", zebra_stripes=True)
        for label, width in COLUMNS:
            table.add_column(label, width=width)
        yield table
        yield Static("", id="model-error", markup=False)
        # wrapped, so a failure's whole reason is on screen at any width (a Log cut it off)
        yield RichLog(id="events", max_lines=400, wrap=True, markup=False)

    def show_model(self, view: ModelView) -> None:
        table = self.query_one("#models", DataTable)
        row = model_row(view)
        if view.name in self._rows:
            for col, value in zip(table.ordered_columns, row, strict=True):
                table.update_cell(view.name, col.key, value)
        else:
            table.add_row(*row, key=view.name)
        self._rows[view.name] = view
        self.show_selected_error()

    def show_only(self, views: list[ModelView]) -> None:
        """The whole table anew (a `reset`: after a reconnect, to another server): rows of models
        it does not hold go."""
        table = self.query_one("#models", DataTable)
        keep = {v.name for v in views}
        for name in [n for n in self._rows if n not in keep]:
            table.remove_row(name)
            del self._rows[name]
        for view in views:
            self.show_model(view)

    def show_selected_error(self) -> None:
        rec = self._rows.get(self.selected or "")
        note, style = model_note(rec) if rec is not None else ("", "")
        self.query_one("#model-error", Static).update(outside(note, style=style, one_line=False))

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self.show_selected_error()

    @property
    def selected(self) -> str | None:
        table = self.query_one("#models", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return str(key.value) if key is not None else None

    def log_event(self, ev: dict[str, Any]) -> None:
        self.query_one("#events", RichLog).write(outside(event_line(ev)))
