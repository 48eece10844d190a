"""The conversation journal: on disk as it happens; a torn last line is skipped, never fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gputui import journal as store
from gputui.chat.sanitize import InputRefused, clean_prompt, visible
from gputui.journal import ConversationLog, read_transcript


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


def write_lines(path: Path, *records: object) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def test_a_line_of_the_wrong_shape_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    """One foreign line used to raise out of the reader (and hide every palette command)."""
    path = tmp_path / "j.jsonl"
    write_lines(path, {"type": "meta", "model": "glm"}, {"type": "message", "role": "user", "content": "hi"},
                {"type": "chunk", "reply": "x", "text": "?"}, {"type": "chunk", "reply": [1], "text": "?"},
                {"type": "reply_end", "reply": None}, {"type": "chunk", "reply": 0, "text": "hello"},
                {"type": "reply_end", "reply": 0, "complete": True, "stats": "not a dict"},
                {"type": 7}, [1, 2], "[" * 200_000)
    t = read_transcript(path)
    assert [(m.role, m.content, m.complete) for m in t.messages] == [("user", "hi", True), ("assistant", "hello", True)]
    assert t.skipped_lines == 6 and t.meta["model"] == "glm"
    assert store.read_meta(path) == {"type": "meta", "model": "glm"}


async def test_a_corrupt_line_mid_file_never_glues_the_next_reply_onto_an_old_one(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    write_lines(path, {"type": "meta", "model": "glm"},
                {"type": "chunk", "reply": 0, "text": "zero"}, {"type": "reply_end", "reply": 0, "complete": True},
                '{"type": "chunk", "reply": 1, "te',  # torn mid-file (a crash, then the file went on)
                '\x00\x00\x00{"type": "reply_end", "reply": 1',  # and its end line garbled
                {"type": "chunk", "reply": 2, "text": "two"}, {"type": "reply_end", "reply": 2, "complete": True})
    log, t = ConversationLog.open(path)
    n = log.begin_reply()
    await log.reply_text(n, "three")
    await log.end_reply(n, True)
    assert [m.content for m in read_transcript(path).messages] == ["zero", "two", "three"]


def test_a_fifo_in_the_conversations_folder_is_refused_not_waited_on(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "trap.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        read_transcript(fifo)
    assert store.read_meta(fifo) == {}
