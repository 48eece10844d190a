"""Outside text in widgets: one place that makes it inert (see gputui.core.text).

Widgets never hand outside text to Textual as a plain string where Textual parses markup
(notifications, the command palette, Select and OptionList prompts, Label by default): they
hand it a rich Text, whose characters are drawn as they are, after `visible` has made every
control character a symbol.
"""

from __future__ import annotations

from rich.text import Text

from gputui.core.text import visible


def outside(text: object, style: str = "", *, one_line: bool = True) -> Text:
    """A Text that draws `text` literally: no markup, control characters made visible."""
    return Text(visible("" if text is None else text, one_line=one_line), style=style)


def outside_block(text: object, style: str = "") -> Text:
    """The same for multi-line text (a reply, an explanation): newlines and tabs stay."""
    return outside(text, style, one_line=False)
