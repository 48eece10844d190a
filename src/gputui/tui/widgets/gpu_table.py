"""Every GPU on one line each, for a terminal too small for a panel per GPU (nvitop's compact
mode): 8 GPUs and the models fit an 80x24 SSH window. One Static drawing one rich Table, so a
refresh is one render whatever the count."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from gputui.core.snapshot import GpuSnapshot, ServerSnapshot
from gputui.core.units import human_bytes, human_pair
from gputui.tui.outside import outside

FIXED_COLUMNS = 34  # GPU, used/total, util, temp and the gaps: what the bar and "on it" share


def gpu_label(g: GpuSnapshot) -> str:
    return f"{g.host.split()[0]}:{g.index}" if g.host else str(g.index)


def bar(used: int | None, total: int | None, width: int) -> Text:
    if used is None or not total or width <= 0:
        return Text("N/A".ljust(max(width, 3)), style="dim")
    frac = max(0.0, min(1.0, used / total))
    filled = round(frac * width)
    style = "red" if frac > 0.95 else "yellow" if frac > 0.8 else "green"
    return Text("█" * filled, style=style) + Text("░" * (width - filled), style="dim")


def holders(g: GpuSnapshot) -> Text:
    """Who holds memory: our models by name, others as user and size, biggest first."""
    t = Text(no_wrap=True, overflow="ellipsis")
    for i, p in enumerate(g.processes):
        if i:
            t.append(" ")
        if p.ours:
            t.append(outside(p.model or str(p.pid), style="bold cyan"))
        else:
            t.append(outside(p.user or f"pid {p.pid}"))
            t.append(f" {human_bytes(p.used_bytes).replace(' ', '')}", style="dim")
    return t


def gpu_rows(snap: ServerSnapshot, width: int) -> Table:
    table = Table(box=None, pad_edge=False, show_header=True, header_style="dim", expand=True, padding=(0, 1))
    bar_width = max(6, min(30, (width - FIXED_COLUMNS) // 3))
    table.add_column("GPU", no_wrap=True)
    table.add_column("memory", width=bar_width, no_wrap=True)
    table.add_column("used", justify="right", no_wrap=True)
    table.add_column("util", justify="right", no_wrap=True)
    table.add_column("temp", justify="right", no_wrap=True)
    table.add_column("on it", ratio=1, no_wrap=True, overflow="ellipsis")
    for g in snap.gpus:
        label = Text(gpu_label(g), style="bold")
        if g.error:
            label.append(" ✖", style="red bold")
            table.add_row(label, outside(g.error, style="red"), "", "", "", Text(""))
            continue
        if g.first_matmul_would_fail:  # a new process's first cuBLAS call would fail here
            label.append(" ⚠", style="red bold")
        table.add_row(label, bar(g.used_bytes, g.total_bytes, bar_width),
                      human_pair(g.used_bytes, g.total_bytes),
                      "N/A" if g.util_percent is None else f"{g.util_percent}%",
                      "N/A" if g.temperature_c is None else f"{g.temperature_c}°",
                      holders(g))
    return table


class GpuTable(Static):
    """The compact view; `show(snapshot)` redraws it."""

    DEFAULT_CSS = "GpuTable { height: auto; padding: 0 1; }"

    def __init__(self) -> None:
        super().__init__(id="gpu-table", markup=False)
        self._last: ServerSnapshot | None = None

    def show(self, snap: ServerSnapshot) -> None:
        self._last = snap
        self.update(gpu_rows(snap, self.size.width or 80))

    def on_resize(self) -> None:
        if self._last is not None:
            self.show(self._last)
