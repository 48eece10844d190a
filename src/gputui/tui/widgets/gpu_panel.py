"""One GPU: identity, memory bar and history, load, context state and the processes on it.

Every piece of text from outside (process names, user names, GPU names, error text) goes
through `outside`: a rich Text, so brackets are never read as markup, with control characters
drawn as symbols, so another user's argv cannot write to this terminal.
"""

from __future__ import annotations

import time
from collections import deque

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches

from gputui.core.memory import HEADROOM_WARNING
from gputui.core.snapshot import GpuSnapshot
from gputui.core.text import visible
from gputui.core.units import human_bytes, mib
from gputui.tui.outside import outside
from gputui.tui.widgets.lean import LeanStatic

HISTORY_SAMPLES = 600  # five minutes at the default two refreshes a second
# The history covers minutes: it is redrawn every 10 s, whatever the refresh (each redraw is a
# whole line to the terminal; every 4th sample at 0.5 s was 96 B/s a GPU while it filled)
SPARK_SECONDS = 10.0
PARTS = ("#title", "#ident", "#memory", "#history", "#util", "#temp", "#power", "#unavailable", "#contexts",
         "#processes")
BAR_WIDTH = 30


def memory_bar(used: int | None, total: int | None, width: int = BAR_WIDTH) -> Text:
    if used is None or not total:
        return Text("memory N/A", style="dim")
    frac = max(0.0, min(1.0, used / total))
    filled = round(frac * width)
    style = "red" if frac > 0.95 else "yellow" if frac > 0.8 else "green"
    bar = Text("█" * filled, style=style) + Text("░" * (width - filled), style="dim")
    return bar + Text(f" {mib(used)} / {mib(total)} ({frac:.0%})")


def _na(value: object, unit: str = "") -> str:
    return "N/A" if value is None else f"{value}{unit}"


BLOCKS = "▁▂▃▄▅▆▇█"  # the lowest level still draws, so an idle GPU shows a baseline


def history_text(history: "deque[float] | list[float]", width: int) -> Text:
    """Memory use over the last minutes as one line of block characters (max per bucket).

    One plain Text: far cheaper to draw every refresh than a widget of per-cell segments."""
    data = list(history)
    if not data or width <= 0:
        return Text("")
    n = min(width, len(data))
    out = []
    for i in range(n):
        bucket = data[i * len(data) // n:(i + 1) * len(data) // n] or [0.0]
        v = max(0.0, min(1.0, max(bucket)))
        out.append(BLOCKS[round(v * (len(BLOCKS) - 1))])
    return Text("".join(out))


def title_text(g: GpuSnapshot) -> Text:
    t = Text(f"GPU {g.index}", style="bold")
    t.append(outside(f"  {g.name}"))
    cuda = f"cuda:{_na(g.cuda_index_pci)}" if g.cuda_index_pci is not None else "hidden from CUDA"
    t.append(f"  [{cuda}", style="cyan")
    if g.cuda_index_default != g.cuda_index_pci:
        t.append(f"; default order cuda:{_na(g.cuda_index_default)}", style="yellow")
    t.append("]", style="cyan")
    return t


def ident_text(g: GpuSnapshot) -> Text:
    return outside(f"{g.uuid}  bus {g.pci_bus_id}", style="dim")


# The load line is four widgets of fixed width: power changes nearly every sample, and then only
# its few characters are written to the terminal, not the whole line (issue 20). Fixed, not
# as wide as their text: a change of width is a new layout, and that repaints the whole panel
# (measured on the H200: 4x the bytes). Plain text, no styles: each style run costs its own
# escape codes.
def util_text(g: GpuSnapshot) -> str:
    return f"util {_na(g.util_percent, '%')}"


def temp_text(g: GpuSnapshot) -> str:
    return f"  temp {_na(g.temperature_c, '°C')}"


def power_text(g: GpuSnapshot) -> str:
    power = "N/A" if g.power_w is None else f"{g.power_w:.0f} W"
    if g.power_w is not None and g.power_limit_w:
        power += f" / {g.power_limit_w:.0f} W"
    return f"  power {power}"


def unavailable_text(g: GpuSnapshot) -> str:
    if not g.unavailable:
        return ""
    return visible(f"  (N/A: {', '.join(g.unavailable)} - not supported or no permission)", one_line=True)


def context_text(g: GpuSnapshot) -> Text:
    holders = g.context_holders
    ours = [p for p in holders if p.ours]
    t = Text(f"contexts {len(holders)} ({len(ours)} ours)  headroom ")
    room = g.headroom_bytes
    t.append(human_bytes(room), style="red bold" if g.first_matmul_would_fail else "green")
    if g.first_matmul_would_fail:
        t.append(f"\n⚠ {HEADROOM_WARNING}", style="red")
    return t


def process_table(g: GpuSnapshot, limit: int = 6) -> Table | Text:
    if not g.processes:
        return Text("no processes", style="dim")
    table = Table(box=None, pad_edge=False, show_header=True, header_style="dim", expand=True)
    for col, kw in (("pid", {"justify": "right"}), ("user", {}), ("MiB", {"justify": "right"}),
                    ("command", {"ratio": 1, "no_wrap": True, "overflow": "ellipsis"})):
        table.add_column(col, **kw)  # type: ignore[arg-type]
    for p in g.processes[:limit]:
        style = "bold cyan" if p.ours else ""
        who = p.user if p.user is not None else "? (host pid hidden)"
        label = f"[gputui: {p.model}] " if p.ours else ""
        mem_text = "N/A" if p.used_bytes is None else str(p.used_bytes >> 20)
        table.add_row(
            Text(str(p.pid), style=style), outside(who, style=style),
            Text(mem_text, style=style), outside(label + (p.command or "?"), style=style),
        )
    if len(g.processes) > limit:
        table.add_row("", "", "", Text(f"... {len(g.processes) - limit} more", style="dim"))
    return table


class GpuPanel(Vertical):
    """The panel of one GPU; `show(snapshot)` updates it from the latest picture."""

    DEFAULT_CSS = """
    GpuPanel { height: auto; border: round $primary; padding: 0 1; margin-bottom: 0; }
    GpuPanel.lost { border: round $error; }
    GpuPanel.tight { border: round $warning; }
    GpuPanel > #history { height: 1; color: $accent; }
    GpuPanel > Static { height: auto; }
    GpuPanel > #load { height: 1; }
    GpuPanel > #load > #util { width: 9; }
    GpuPanel > #load > #temp { width: 13; }
    GpuPanel > #load > #power { width: 25; }
    GpuPanel > #load > #unavailable { width: 1fr; }
    """

    def __init__(self, first: GpuSnapshot, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.index = first.index
        self.history: deque[float] = deque(maxlen=HISTORY_SAMPLES)
        self._first: GpuSnapshot | None = first
        self._last: GpuSnapshot | None = None
        self._ready = False  # children exist only once mounted; until then keep the latest
        self._keys: dict[str, object] = {}
        self._lines: dict[str, int] = {}
        self._spark_dirty = 0
        self._spark_at = 0.0  # when the history line was last drawn (monotonic seconds)
        self._parts: dict[str, LeanStatic] | None = None
        self.record(first)

    def _children_ready(self) -> bool:
        """The parts exist once composed; a panel mounted behind another screen may not be yet."""
        if self._parts is None:
            try:
                self._parts = {p: self.query_one(p, LeanStatic) for p in PARTS}
            except NoMatches:
                self.call_after_refresh(self._retry)
                return False
        return True

    def _retry(self) -> None:
        if self._first is not None and self._children_ready():
            first, self._first = self._first, None
            self._draw(first)

    def on_mount(self) -> None:
        self._ready = True
        if self._first is not None:
            first, self._first = self._first, None
            self._draw(first)

    def compose(self) -> ComposeResult:
        yield LeanStatic(id="title")
        yield LeanStatic(id="ident")
        yield LeanStatic(id="memory")
        yield LeanStatic(id="history")
        with Horizontal(id="load"):
            yield LeanStatic(id="util")
            yield LeanStatic(id="temp")
            yield LeanStatic(id="power")
            yield LeanStatic(id="unavailable")
        yield LeanStatic(id="contexts")
        yield LeanStatic(id="processes")

    def show(self, g: GpuSnapshot) -> None:
        self.record(g)
        self._draw(g)

    def record(self, g: GpuSnapshot) -> None:
        """Every sample goes into the history, also those that arrive before the panel is drawn."""
        if g.used_bytes is not None and g.total_bytes:
            self.history.append(g.used_bytes / g.total_bytes)
            self._spark_dirty += 1

    def _draw(self, g: GpuSnapshot) -> None:
        if not self._ready or not self._children_ready():
            self._first = g  # shown as soon as the children exist
            return
        self.set_class(g.error is not None, "lost")
        self.set_class(g.first_matmul_would_fail, "tight")
        now = time.monotonic()
        if self._spark_dirty and (now - self._spark_at >= SPARK_SECONDS or len(self.history) <= 2):
            assert self._parts is not None
            spark = self._parts["#history"]
            spark.show(history_text(self.history, spark.size.width or 60))  # a flat line: no repaint
            self._spark_dirty, self._spark_at = 0, now
        self._last = g
        if g.error:
            parts: dict[str, object] = {"#title": title_text(g), "#ident": ident_text(g),
                                        "#memory": outside(f"✖ {g.error}", style="red bold"),
                                        "#util": "", "#temp": "", "#power": "", "#unavailable": "", "#contexts": "",
                                        "#processes": ""}
            keys: dict[str, object] = {k: ("error", g.error, g.name) for k in parts}
        else:
            keys = {
                "#title": (g.name, g.cuda_index_pci, g.cuda_index_default),
                "#ident": (g.uuid, g.pci_bus_id),
                "#memory": (g.used_bytes, g.total_bytes),
                "#util": g.util_percent,
                "#temp": g.temperature_c,
                "#power": (round(g.power_w) if g.power_w is not None else None, g.power_limit_w),
                "#unavailable": g.unavailable,
                "#contexts": (g.free_bytes // (1 << 20) if g.free_bytes is not None else None,
                              tuple((p.pid, p.kind, p.ours) for p in g.processes)),
                "#processes": g.processes,
            }
            parts = {}
        for part, key in keys.items():
            if self._keys.get(part) == key:
                continue  # unchanged: no render, no layout
            self._keys[part] = key
            renderable = parts.get(part) if g.error else _RENDER[part](g)
            widget = self._parts[part]  # type: ignore[index]
            # Only a change in line count needs a new layout of the screen.
            lines = _line_count(renderable)
            widget.update(renderable, layout=lines != self._lines.get(part))  # type: ignore[arg-type]
            self._lines[part] = lines


def _line_count(r: object) -> int:
    if isinstance(r, str):
        return len(r.splitlines()) or 1
    if isinstance(r, Text):
        return len(r.plain.splitlines()) or 1
    if isinstance(r, Table):
        return r.row_count + 1
    return 1


_RENDER = {
    "#title": title_text, "#ident": ident_text, "#util": util_text, "#temp": temp_text, "#power": power_text,
    "#unavailable": unavailable_text,
    "#contexts": context_text,
    "#processes": process_table,
    "#memory": lambda g: memory_bar(g.used_bytes, g.total_bytes),
}
