"""The conversation journal: on disk as it happens; a torn last line is skipped, never fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gputui.chat import store
from gputui.chat.sanitize import InputRefused, clean_prompt, visible
from gputui.chat.store import ConversationLog, read_transcript


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GPUTUI_DATA_DIR", str(tmp_path))
    return tmp_path


async def test_the_user_message_is_on_disk_before_anything_else() -> None:
    log = await ConversationLog.create("glm", "chatglm3")
    await log.user_message("hello")
    lines = log.path.read_text().splitlines()
    assert json.loads(lines[-1])["content"] == "hello"


async def test_a_reply_cut_off_reads_back_incomplete(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "FLUSH_EVERY_S", 0.0)  # flush every piece
    log = await ConversationLog.create("glm", "chatglm3")
    await log.user_message("hi")
    n = log.begin_reply()
    await log.reply_text(n, "partial ")
    await log.reply_text(n, "answer")
    # the app dies here: no end_reply
    t = read_transcript(log.path)
    assert [(m.role, m.content, m.complete) for m in t.messages] == [("user", "hi", True), ("assistant", "partial answer", False)]


async def test_a_torn_last_line_is_skipped() -> None:
    log = await ConversationLog.create("glm", "chatglm3")
    await log.user_message("one")
    n = log.begin_reply()
    await log.reply_text(n, "two")
    await log.end_reply(n, True)
    with open(log.path, "a") as f:
        f.write('{"type": "message", "role": "user", "cont')  # killed mid-write
    t = read_transcript(log.path)
    assert t.skipped_lines == 1
    assert [m.content for m in t.messages] == ["one", "two"] and t.messages[1].complete


async def test_a_reopened_conversation_continues_numbering() -> None:
    log = await ConversationLog.create("glm", "chatglm3")
    for text in ("a", "b"):
        await log.user_message(text)
        n = log.begin_reply()
        await log.reply_text(n, text.upper())
        await log.end_reply(n, True)
    again, t = ConversationLog.open(log.path)
    assert [m.content for m in t.messages] == ["a", "A", "b", "B"]
    n = again.begin_reply()
    assert n == 2


def test_control_characters_are_shown_as_symbols() -> None:
    assert visible("a\x00b\x1b[31mc\n") == "a␀b␛[31mc\n"


def test_a_huge_message_is_refused_with_a_reason() -> None:
    with pytest.raises(InputRefused, match="limit"):
        clean_prompt("x" * 10_000_000)
    assert clean_prompt("a\x00b") == "ab"
