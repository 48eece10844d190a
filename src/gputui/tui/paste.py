"""Bracketed paste that survives an ESC inside the pasted text.

Textual's XTermParser (8.x) ends a bracketed paste at the first ESC inside it: the rest of the
paste arrives as key presses - reordered, with `^` for the ESC, and a CR in it pressing Enter,
which sends half a message. Pasting terminal output (colour codes) or text with an ESC in it is
ordinary, and an attacker's text can be built to do exactly that. No Textual release fixes it
(see README, "Hostile input"), so we keep our own thin layer in front of the parser: everything
between `ESC [ 200 ~` and `ESC [ 201 ~` is one Paste event, whatever it holds; everything else
goes to Textual's parser unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from textual import events
from textual.message import Message

try:  # Textual's parser is private: a release that moves it must not stop the dashboard
    from textual._xterm_parser import XTermParser
except ImportError:  # then Textual's own paste handling is used, and the user is told (install)
    XTermParser = None  # type: ignore[assignment,misc]

PASTE_START = "\x1b[200~"
PASTE_END = "\x1b[201~"
MAX_PASTE_CHARS = 1 << 20  # more is cut here (the chat refuses far less, and says so)
HOLD_S = 0.05  # how long a tail that may start a marker waits for the rest (a lone ESC key)


def _partial_marker(data: str, marker: str) -> int:
    """How many characters at the end of `data` could be the start of `marker`."""
    for n in range(min(len(marker) - 1, len(data)), 0, -1):
        if marker.startswith(data[-n:]):
            return n
    return 0


class PasteSafeParser(XTermParser or object):  # type: ignore[misc]
    def __init__(self, debug: bool = False) -> None:
        super().__init__(debug)
        self._pasting = False
        self._paste: list[str] = []
        self._paste_len = 0
        self._held = ""
        self._held_at = 0.0

    def feed(self, data: str) -> Iterable[Message]:
        if not data:  # end of input: what is held is not a marker after all
            held, self._held = self._held, ""
            return [*(super().feed(held) if held and not self._pasting else ()), *super().feed("")]
        data, self._held = self._held + data, ""
        out: list[Message] = []
        while data:
            marker = PASTE_END if self._pasting else PASTE_START
            at = data.find(marker)
            if at < 0:
                keep = _partial_marker(data, marker)
                body, self._held = data[:len(data) - keep], data[len(data) - keep:]
                self._held_at = time.monotonic()
                data = ""
            else:
                body, data = data[:at], data[at + len(marker):]
            if self._pasting:
                self._add(body)
            elif body:
                out.extend(super().feed(body))
            if at >= 0:
                if self._pasting:
                    out.append(events.Paste("".join(self._paste).replace("\x00", "")))
                    self._paste, self._paste_len = [], 0
                self._pasting = not self._pasting
        return out

    def _add(self, text: str) -> None:
        room = MAX_PASTE_CHARS - self._paste_len
        if room > 0:
            self._paste.append(text[:room])
        self._paste_len += len(text)

    def tick(self) -> Iterable[Message]:
        # a held tail that no marker followed (a lone ESC key press): hand it on now
        if self._held and not self._pasting and time.monotonic() - self._held_at >= HOLD_S:
            held, self._held = self._held, ""
            yield from super().feed(held)
        yield from super().tick()


NOT_GUARDED = ("this Textual release moved the parser gputui guards pastes with: a paste holding an ESC may "
               "arrive in pieces (Textual's own paste handling is used)")


def install() -> str | None:
    """Make the terminal drivers use PasteSafeParser (before App.run). Returns a note for the
    user when it cannot (a Textual release that moved its private parser or drivers)."""
    if XTermParser is None:
        return NOT_GUARDED
    try:
        from textual.drivers import linux_driver, linux_inline_driver
    except ImportError:
        return NOT_GUARDED
    if not (hasattr(linux_driver, "XTermParser") and hasattr(linux_inline_driver, "XTermParser")):
        return NOT_GUARDED
    linux_driver.XTermParser = PasteSafeParser  # type: ignore[misc,attr-defined,unused-ignore]
    linux_inline_driver.XTermParser = PasteSafeParser  # type: ignore[misc,attr-defined,unused-ignore]
    return None
