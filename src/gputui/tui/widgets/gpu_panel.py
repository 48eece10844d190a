"""One GPU: identity, memory bar and history, load, context state and the processes on it.

Every piece of text from outside (process names, user names, GPU names, error text) goes
through `outside`: a rich Text, so brackets are never read as markup, with control characters
drawn as symbols, so another user's argv cannot write to this terminal.
"""

from __future__ import annotations

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
SPARK_EVERY = 4  # redraw the history every 4th sample
PARTS = ("#title", "#ident", "#memory", "#history", "#util", "#temp", "#power", "#contexts", "#processes")
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


# The load line is three widgets, each as wide as its text: power changes nearly every sample,
# and then only its few characters are written to the terminal, not the whole line (issue 20).
# Plain text, no styles: each style run costs its own escape codes.
def util_text(g: GpuSnapshot) -> str:
    return f"util {_na(g.util_percent, '%')}"


def temp_text(g: GpuSnapshot) -> str:
    return f"  temp {_na(g.temperature_c, '°C')}"


def power_text(g: GpuSnapshot) -> str:
    power = "N/A" if g.power_w is None else f"{g.power_w:.0f} W"
    if g.power_w is not None and g.power_limit_w:
        power += f" / {g.power_limit_w:.0f} W"
    t = f"  power {power}"
    if g.unavailable:
        t += f"  (N/A: {', '.join(g.unavailable)} - not supported or no permission)"
    return visible(t, one_line=True)


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
    GpuPanel > #history { height: 1; width: auto; color: $accent; }
    GpuPanel > Static { height: auto; }
    GpuPanel > #load { height: 1; }
    GpuPanel > #load > LeanStatic { width: auto; }
    """

    def __init__(self, first: GpuSnapshot, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.index = first.index
        self.history: deque[float] = deque(maxlen=HISTORY_SAMPLES)
        self._first: GpuSnapshot | None = first
        self._last: GpuSnapshot | None = None
        self._ready = False  # children exist only once mounted; until then keep the latest
        self._keys: dict[str, object] = {}
        self._lines: dict[str, tuple[int, int | None]] = {}
        self._spark_dirty = 0
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
        yield LeanStatic(id="history", fit=True)
        with Horizontal(id="load"):
            yield LeanStatic(id="util")
            yield LeanStatic(id="temp")
            yield LeanStatic(id="power")
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
        # The sparkline covers minutes: redrawing it every few samples is plenty.
        if self._spark_dirty >= SPARK_EVERY or len(self.history) <= SPARK_EVERY:
            assert self._parts is not None
            spark = self._parts["#history"]
            # as wide as the panel, drawn only as wide as its text; a flat line repaints nothing
            spark.show(history_text(self.history, self.content_size.width or 60))
            self._spark_dirty = 0
        self._last = g
        if g.error:
            parts: dict[str, object] = {"#title": title_text(g), "#ident": ident_text(g),
                                        "#memory": outside(f"✖ {g.error}", style="red bold"),
                                        "#util": "", "#temp": "", "#power": "", "#contexts": "", "#processes": ""}
            keys: dict[str, object] = {k: ("error", g.error, g.name) for k in parts}
        else:
            keys = {
                "#title": (g.name, g.cuda_index_pci, g.cuda_index_default),
                "#ident": (g.uuid, g.pci_bus_id),
                "#memory": (g.used_bytes, g.total_bytes),
                "#util": g.util_percent,
                "#temp": g.temperature_c,
                "#power": (round(g.power_w) if g.power_w is not None else None, g.power_limit_w, g.unavailable),
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
            # Only a change in size needs a new layout of the screen (the parts as wide as their
            # text change width with it)
            size = (_line_count(renderable), _width(renderable))
            widget.update(renderable, layout=size != self._lines.get(part))  # type: ignore[arg-type]
            self._lines[part] = size


def _width(r: object) -> int | None:
    if isinstance(r, str):
        return max((len(line) for line in r.splitlines()), default=0)
    if isinstance(r, Text):
        return r.cell_len
    return None


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
    "#contexts": context_text,
    "#processes": process_table,
    "#memory": lambda g: memory_bar(g.used_bytes, g.total_bytes),
}
