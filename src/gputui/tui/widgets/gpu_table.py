"""Every GPU on one line each, for a terminal too small for a panel per GPU (nvitop's compact
mode): 8 GPUs and the models fit an 80x24 SSH window. A line widget per GPU, so a refresh
repaints only the GPUs whose line changed (an idle server: none)."""

from __future__ import annotations

from rich.text import Text
from textual.containers import Vertical

from gputui.core.snapshot import GpuSnapshot, ServerSnapshot
from gputui.core.units import human_bytes, human_pair
from gputui.tui.outside import outside
from gputui.tui.widgets.lean import LeanStatic

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


def gpu_lines(snap: ServerSnapshot, width: int) -> list[Text]:
    """The header and one line per GPU, in columns as wide as their widest entry (so the lines
    line up without a table, and each can be drawn alone)."""
    bar_width = max(6, min(30, (width - FIXED_COLUMNS) // 3))
    cells = []
    for g in snap.gpus:
        label = Text(gpu_label(g), style="bold")
        if g.error:
            label.append(" ✖", style="red bold")
            cells.append((label, outside(g.error, style="red"), Text(""), Text(""), Text(""), Text("")))
            continue
        if g.first_matmul_would_fail:  # a new process's first cuBLAS call would fail here
            label.append(" ⚠", style="red bold")
        cells.append((label, bar(g.used_bytes, g.total_bytes, bar_width),
                      Text(human_pair(g.used_bytes, g.total_bytes)),
                      Text("N/A" if g.util_percent is None else f"{g.util_percent}%"),
                      Text("N/A" if g.temperature_c is None else f"{g.temperature_c}°"),
                      holders(g)))
    header = tuple(Text(h) for h in ("GPU", "memory", "used", "util", "temp", "on it"))
    widths = [max(c[i].cell_len for c in (header, *cells)) for i in range(5)]
    widths[1] = bar_width
    rest = max(1, width - sum(widths) - 5)
    lines = []
    for row, style in [(header, "dim"), *((c, "") for c in cells)]:
        line = Text(no_wrap=True, overflow="ellipsis", style=style)
        for i, cell in enumerate(row[:5]):
            cell = cell.copy()
            cell.align("right" if i in (2, 3, 4) else "left", widths[i])  # numbers to the right
            line.append_text(cell)
            line.append(" ")
        last = row[5].copy()
        last.truncate(rest, overflow="ellipsis")
        line.append_text(last)
        lines.append(line)
    return lines


class GpuTable(Vertical):
    """The compact view; `show(snapshot)` repaints only the lines that changed."""

    DEFAULT_CSS = "GpuTable { height: auto; padding: 0 1; } GpuTable > LeanStatic { height: 1; }"

    def __init__(self) -> None:
        super().__init__(id="gpu-table")
        self._last: ServerSnapshot | None = None

    def show(self, snap: ServerSnapshot) -> None:
        self._last = snap
        lines = gpu_lines(snap, self.content_size.width or 80)
        rows = list(self.query_children(LeanStatic))
        if len(rows) != len(lines):
            for row in rows[len(lines):]:
                row.remove()
            new = [LeanStatic() for _ in range(len(lines) - len(rows))]
            if new:
                self.mount_all(new)
            rows = (rows + new)[: len(lines)]
        for row, line in zip(rows, lines, strict=True):
            row.show(line)

    def text(self) -> str:
        """What the view says, line by line (tests)."""
        return "\n".join(str(r._shown or "") for r in self.query_children(LeanStatic))  # noqa: SLF001

    def on_resize(self) -> None:
        if self._last is not None:
            self.show(self._last)
