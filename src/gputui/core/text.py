"""Outside text, made safe to draw: the one function every screen and CLI line goes through.

Outside text is anything gputui did not write itself: other users' command lines and user
names, model output, checkpoint tensor names and paths, library error text, journal, profile
and lock-file contents. A terminal that receives a raw `ESC ] 52 ;` from it has had its
clipboard written by a stranger; a raw `ESC [ 1 A` rewrites lines gputui drew. So control
characters are drawn as the Unicode "control pictures" (ESC -> ␛), never sent as themselves.

Markup is the other half: widgets show this text with markup off (Text objects, markup=False,
`escape_markup` where Textual insists on parsing), so `[/]` is four characters, not a crash.
"""

from __future__ import annotations

import re

# C0 controls (0x00-0x1f) as their control pictures U+2400-U+241F, DEL as ␡.
_TABLE: dict[int, str] = {o: chr(0x2400 + o) for o in range(32)}
_TABLE[0x7F] = "␡"
# C1 controls (0x80-0x9f): some terminals act on them as 8-bit escape sequences (0x9b is CSI,
# 0x9d is OSC), so they are drawn as their 7-bit equivalents: 0x9b -> "␛[".
_TABLE.update({o: "␛" + chr(o - 0x40) for o in range(0x80, 0xA0)})
# Characters that reorder or hide text ("Trojan source"): a file name that reads backwards.
_TABLE.update({o: f"<U+{o:04X}>" for o in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F,
                                           0x061C, 0x2028, 0x2029)})

_MULTI_LINE = dict(_TABLE)
del _MULTI_LINE[ord("\n")], _MULTI_LINE[ord("\t")]


def visible(text: object, *, one_line: bool = False) -> str:
    """`text` with every control character drawn as a visible symbol: '\\x1b[31m' -> '␛[31m'.

    Newlines and tabs stay in multi-line text (a chat reply); `one_line=True` (a table cell,
    a process's command line) draws them too, so a crafted argv cannot break a row in two."""
    s = text if isinstance(text, str) else str(text)
    return s.translate(_TABLE if one_line else _MULTI_LINE)


def has_control(text: str) -> bool:
    """True when `text` holds a character that `visible` replaces in multi-line text (for
    tests and checks: newlines and tabs are allowed)."""
    return bool(_CONTROL_RE.search(text))


_CONTROL_RE = re.compile("[" + "".join(re.escape(chr(o)) for o in _MULTI_LINE) + "]")
