"""A paste holding an ESC arrives whole, as one paste (hostile-server issue, item 10).

Textual's own parser ends the paste at the ESC: the rest arrives as key presses, a CR in it
presses Enter. The cases feed the bytes a terminal sends, in one read and split across reads
at every position."""

from __future__ import annotations

import time

import pytest
from textual import events

from gputui.tui.paste import HOLD_S, PasteSafeParser

PASTED = "ls\x1b[31mred\x1b[0m\rrm -rf ~\x1b"
TERMINAL = "a\x1b[200~" + PASTED + "\x1b[201~b"


def parse(chunks: list[str]) -> list[object]:
    p = PasteSafeParser()
    out: list[object] = []
    for c in chunks:
        out.extend(p.feed(c))
    time.sleep(HOLD_S * 2)
    out.extend(p.tick())
    out.extend(p.feed(""))
    return out


def summary(evs: list[object]) -> list[str]:
    return [f"paste:{e.text}" if isinstance(e, events.Paste) else f"key:{e.key}"  # type: ignore[attr-defined]
            for e in evs if isinstance(e, (events.Paste, events.Key))]


@pytest.mark.parametrize("split", range(len(TERMINAL) + 1))
def test_a_paste_with_escapes_is_one_paste_however_the_reads_split(split: int) -> None:
    evs = summary(parse([TERMINAL[:split], TERMINAL[split:]] if 0 < split < len(TERMINAL) else [TERMINAL]))
    assert evs == ["key:a", f"paste:{PASTED}", "key:b"]


def test_textual_alone_breaks_it() -> None:
    """What the layer is for: without it the paste is cut at the ESC (if this starts passing,
    Textual fixed it and the layer can go)."""
    from textual._xterm_parser import XTermParser

    p = XTermParser()
    evs = summary(list(p.feed(TERMINAL)))
    assert evs != ["key:a", f"paste:{PASTED}", "key:b"]


def test_a_lone_escape_key_still_arrives() -> None:
    assert summary(parse(["\x1b"])) == ["key:escape"]
    assert summary(parse(["x", "\x1b", "[A"])) == ["key:x", "key:up"]  # an arrow key split over reads


def test_an_endless_paste_is_cut() -> None:
    from gputui.tui.paste import MAX_PASTE_CHARS

    p = PasteSafeParser()
    list(p.feed("\x1b[200~"))
    for _ in range(3):
        list(p.feed("x" * MAX_PASTE_CHARS))
    (paste,) = [e for e in p.feed("\x1b[201~") if isinstance(e, events.Paste)]
    assert len(paste.text) == MAX_PASTE_CHARS
