"""A Static that writes as little as it can to the terminal.

Why: over SSH, an idle dashboard should send next to nothing (issue 20 measured gputui at 350 B/s
against nvitop's 122 at the same refresh). Textual repaints a widget's whole region on every
update, so: update only when the content changed. (Build content with few style runs: each
run is written with its own style codes.)
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class LeanStatic(Static):
    def __init__(self, *args: object, fit: bool = False, **kwargs: object) -> None:
        """`fit`: the widget is as wide as its text (CSS width: auto), so a change of length
        needs a new layout; the terminal is then written only as wide as the text."""
        kwargs.setdefault("markup", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._shown: Text | str | None = None
        self._fit = fit

    def show(self, content: Text | str, layout: bool = False) -> bool:
        """Show `content` unless it is what is shown already; True when it repainted."""
        if content == self._shown:
            return False
        if self._fit and _cells(content) != _cells(self._shown):
            layout = True
        self._shown = content
        self.update(content, layout=layout)
        return True


def _cells(content: Text | str | None) -> int:
    if content is None:
        return -1
    return content.cell_len if isinstance(content, Text) else Text(content).cell_len
