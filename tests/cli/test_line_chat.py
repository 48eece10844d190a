"""`gputui chat` in line mode speaks the TUI's slash commands (one parser: chat/commands.py);
an unknown command or an /image to a model that reads none is refused, never sent as text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gputui.chat.commands import CommandRefused, Line, parse_line


@pytest.mark.parametrize("text, takes_images, expected", [
    ("hello", False, Line("say", "hello")),
    ("/usr/bin/python is slow", False, Line("say", "/usr/bin/python is slow")),  # a path, not a command
    ("//set is a command", False, Line("say", "/set is a command")),
    ("/set temperature=0.2", False, Line("set", "temperature=0.2")),
    ("/SYSTEM be brief", False, Line("system", "be brief")),
    ("/describe 'my cat.png' what is it?", False, Line("describe", "what is it?", "my cat.png")),
    ("/image cat.png what?", True, Line("say", "what?", "cat.png")),
    ("/help", True, Line("help")),
])
def test_lines_parse_as_the_tui_reads_them(text: str, takes_images: bool, expected: Line) -> None:
    assert parse_line(text, takes_images, "m") == expected


@pytest.mark.parametrize("text, takes_images, says", [
    ("/frobnicate now", False, "unknown command /frobnicate"),
    ("/image cat.png", False, "reads no images: /describe"),
    ("/describe cat.png", True, "reads images itself"),
    ("/image", True, "usage: /image"),
    ("/system", False, "usage: /system"),
    ("a question", True, "needs an image"),
])
def test_what_cannot_be_done_is_refused_with_a_hint(text: str, takes_images: bool, says: str) -> None:
    with pytest.raises(CommandRefused, match=says):
        parse_line(text, takes_images, "m")


def test_line_mode_runs_the_commands_and_sends_only_messages(private_folders: Path, tmp_path: Path) -> None:
    from PIL import Image

    img = tmp_path / "swatch.png"
    Image.new("RGB", (40, 30), (120, 80, 200)).save(img)
    lines = ["/help", "/frobnicate", f"/image {img} hi", "/set max_new_tokens=3 temperature=0",
             "/system You are terse.", f"/describe {img} what colour is it?", "hello"]
    out = subprocess.run([sys.executable, "-m", "gputui", "chat", "--demo", "chatglm3"], input="\n".join(lines) + "\n",
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr  # two lines were refused: a script is told so
    err = out.stderr
    for says in ("commands: /set", "unknown command /frobnicate", "reads no images",
                 "settings: max_new_tokens=3, temperature=0", "system prompt set", "blip2 says:"):
        assert says in err, (says, err)
    assert err.count("3 tokens") == 2  # two replies (after /describe, and to hello), each capped by /set
    (journal,) = (private_folders / "data" / "conversations").glob("*chatglm3*.jsonl")
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    text = json.dumps(records)
    assert "frobnicate" not in text and "/image" not in text  # refused lines never reach the model
    assert "You are terse." in text and "described by blip2" in text
