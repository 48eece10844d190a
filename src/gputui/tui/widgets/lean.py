"""A Static that writes as little as it can to the terminal.

Why: over SSH, an idle dashboard should send next to nothing (issue 20 measured gputui at 350 B/s
against nvitop's 122 at the same refresh). Textual repaints a widget's whole region on every
update, so: update only when the content changed. (Build content with few style runs: each
run is written with its own style codes. Keep widths fixed: a change of size is a new layout,
which repaints every widget around it.)
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class LeanStatic(Static):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("markup", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._shown: Text | str | None = None

    def show(self, content: Text | str, layout: bool = False) -> bool:
        """Show `content` unless it is what is shown already; True when it repainted."""
        if content == self._shown:
            return False
        self._shown = content
        self.update(content, layout=layout)
        return True
