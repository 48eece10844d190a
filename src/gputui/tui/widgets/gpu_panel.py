"""One GPU: identity, memory bar and history, load, context state and the processes on it.

Every piece of text from outside (process names, user names, GPU names) goes into rich Text
objects, so brackets in a command line are never read as markup.
"""

from __future__ import annotations

from collections import deque

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from gputui.core.memory import HEADROOM_WARNING
from gputui.core.snapshot import GpuSnapshot
from gputui.core.units import human_bytes, mib

HISTORY_SAMPLES = 600  # five minutes at the default two refreshes a second
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


def title_text(g: GpuSnapshot) -> Text:
    t = Text(f"GPU {g.index}", style="bold")
    t.append(f"  {g.name}")
    cuda = f"cuda:{_na(g.cuda_index_pci)}" if g.cuda_index_pci is not None else "hidden from CUDA"
    t.append(f"  [{cuda}", style="cyan")
    if g.cuda_index_default != g.cuda_index_pci:
        t.append(f"; default order cuda:{_na(g.cuda_index_default)}", style="yellow")
    t.append("]", style="cyan")
    return t


def ident_text(g: GpuSnapshot) -> Text:
    return Text(f"{g.uuid}  bus {g.pci_bus_id}", style="dim")


def load_text(g: GpuSnapshot) -> Text:
    power = "N/A" if g.power_w is None else f"{g.power_w:.0f} W"
    if g.power_w is not None and g.power_limit_w:
        power += f" / {g.power_limit_w:.0f} W"
    t = Text(f"util {_na(g.util_percent, '%')}  temp {_na(g.temperature_c, '°C')}  power {power}")
    if g.unavailable:
        t.append(f"  (N/A: {', '.join(g.unavailable)} - not supported or no permission)", style="dim")
    return t


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
            Text(str(p.pid), style=style), Text(who, style=style),
            Text(mem_text, style=style), Text(label + (p.command or "?"), style=style),
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
    GpuPanel > Sparkline { height: 1; margin: 0; }
    GpuPanel > Static { height: auto; }
    """

    def __init__(self, first: GpuSnapshot, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.index = first.index
        self.history: deque[float] = deque(maxlen=HISTORY_SAMPLES)
        self._first: GpuSnapshot | None = first
        self._last: GpuSnapshot | None = None

    def on_mount(self) -> None:
        if self._first is not None:
            self.show(self._first)
            self._first = None

    def compose(self) -> ComposeResult:
        yield Static(id="title", markup=False)
        yield Static(id="ident", markup=False)
        yield Static(id="memory", markup=False)
        yield Sparkline([0.0], id="history", summary_function=max)
        yield Static(id="load", markup=False)
        yield Static(id="contexts", markup=False)
        yield Static(id="processes", markup=False)

    def show(self, g: GpuSnapshot) -> None:
        if g.used_bytes is not None and g.total_bytes:
            self.history.append(g.used_bytes / g.total_bytes)
        self.set_class(g.error is not None, "lost")
        self.set_class(g.first_matmul_would_fail, "tight")
        last = self._last
        self._last = g
        self.query_one("#history", Sparkline).data = list(self.history) or [0.0]
        if last is not None and last == g:
            return  # nothing but the sparkline changed: skip the text work
        self.query_one("#title", Static).update(title_text(g))
        self.query_one("#ident", Static).update(ident_text(g))
        if g.error:
            self.query_one("#memory", Static).update(Text(f"✖ {g.error}", style="red bold"))
            for part in ("#load", "#contexts", "#processes"):
                self.query_one(part, Static).update("")
            return
        self.query_one("#memory", Static).update(memory_bar(g.used_bytes, g.total_bytes))
        self.query_one("#load", Static).update(load_text(g))
        self.query_one("#contexts", Static).update(context_text(g))
        self.query_one("#processes", Static).update(process_table(g))
