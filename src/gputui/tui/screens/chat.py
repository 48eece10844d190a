"""The chat screen: one or two conversations side by side, with the GPUs in view."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from gputui.core.snapshot import ServerSnapshot
from gputui.core.units import human_bytes
from gputui.tui.messages import SplitChat, SwitchChat
from gputui.tui.outside import outside
from gputui.tui.screens.dashboard import SIMULATED_BANNER
from gputui.tui.widgets.chat_pane import ChatPane


def gpu_summary(snap: ServerSnapshot | None) -> Text:
    t = Text()
    if snap is None:
        return t
    for g in snap.gpus:
        if g.error:
            t.append(outside(f"GPU {g.index}: {g.error}", style="red") + "\n")
            continue
        t.append(f"GPU {g.index} ", style="bold")
        t.append(f"{human_bytes(g.used_bytes)}/{human_bytes(g.total_bytes)} util {g.util_percent if g.util_percent is not None else 'N/A'}%\n")
        for p in g.processes:
            if p.ours:
                t.append(outside(f"  {p.model}: {human_bytes(p.used_bytes)}", style="cyan") + "\n")
    return t


class ChatScreen(Screen[None]):
    DEFAULT_CSS = """
    #chats { height: 1fr; }
    #gpu-mini { width: 30; border-left: solid $primary; padding: 0 1; }
    """
    BINDINGS = [
        Binding("escape", "stop_or_back", "Stop / back"),
        Binding("ctrl+l", "clear", "Clear"),
        Binding("ctrl+n", "switch_model", "Switch model"),
        Binding("ctrl+t", "split", "Side by side"),
    ]

    def __init__(self, panes: list[ChatPane], simulated: bool) -> None:
        super().__init__()
        self.panes = panes
        self.simulated = simulated

    def compose(self) -> ComposeResult:
        yield Header()
        if self.simulated:
            yield Static(SIMULATED_BANNER, id="banner", markup=False)
        with Horizontal(id="chats"):
            yield from self.panes
            yield Static(id="gpu-mini", markup=False)
        yield Footer()

    WIDE = 100  # below this many columns the GPU summary gives its room to the conversation

    def on_resize(self, event: Any) -> None:
        for w in self.query("#gpu-mini"):
            w.display = event.size.width >= self.WIDE

    def show_snapshot(self, snap: ServerSnapshot) -> None:
        for w in self.query("#gpu-mini"):
            w.update(gpu_summary(snap))  # type: ignore[attr-defined]

    def focused_pane(self) -> ChatPane:
        node: Any = self.focused
        while node is not None and not isinstance(node, ChatPane):
            node = node.parent
        return node or self.panes[0]

    def action_stop_or_back(self) -> None:
        """Esc: stop the reply; Esc again: leave it without waiting (a stalled worker never
        answers the stop); Esc when idle: back to the dashboard."""
        pane = self.focused_pane()
        if not pane.replying:
            self.app.pop_screen()
        elif pane.stopping:
            pane.abandon()
        else:
            pane.request_stop()
            self.notify(f"stopping {pane.session.model}; Esc again leaves the reply without waiting")

    def action_clear(self) -> None:
        self.focused_pane().clear()

    def action_switch_model(self) -> None:
        self.post_message(SwitchChat(self.focused_pane().session.model))

    def action_split(self) -> None:
        self.post_message(SplitChat(self))

    async def add_pane(self, pane: ChatPane) -> None:
        self.panes.append(pane)
        await self.query_one("#chats", Horizontal).mount(pane, before="#gpu-mini")
