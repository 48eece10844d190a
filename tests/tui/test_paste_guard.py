"""Issue 29, item 5: the paste guard patches a private Textual parser; a Textual release that
moves it must leave the dashboard starting, with Textual's own paste handling and a note."""

from __future__ import annotations

import pytest

from gputui.tui import paste


def test_a_textual_without_the_private_parser_is_said_and_not_patched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paste, "XTermParser", None)
    assert paste.install() == paste.NOT_GUARDED


def test_the_guard_is_installed_where_textual_has_its_parser() -> None:
    from textual.drivers import linux_driver

    assert paste.install() is None and linux_driver.XTermParser is paste.PasteSafeParser  # type: ignore[attr-defined]
