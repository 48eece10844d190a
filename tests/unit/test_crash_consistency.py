"""Fault 13 of reliability.md: a kill or a full disk during a profile save or a chat append
leaves the old or the new file, never a torn one; nothing already reported is lost.

The kill loops live in tests/crash_harness.py and run in a fresh process: it forks a writer
per run and SIGKILLs it in each phase of the write (placed by wrapping the write's system
calls, so they land on any machine speed), then at random moments.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gputui.core import atomic
from gputui.core.profiles import Profile, load_profile, save_profile
from gputui.core.requests import ModelRequest
from gputui.journal import ConversationLog, read_transcript

HARNESS = Path(__file__).resolve().parents[1] / "crash_harness.py"


def harness(kind: str, runs: int, folder: Path) -> dict:
    out = subprocess.run([sys.executable, str(HARNESS), kind, str(runs), "7", str(folder)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_killing_a_profile_save_in_every_phase_never_tears_the_file(tmp_path: Path) -> None:
    r = harness("profile", 500, tmp_path)
    assert all(n >= 1 for n in r["kills_landed"].values()), r  # each phase was hit, provably
    assert r["torn_files"] == 0 and r["wrong_version"] == 0, r  # old before the rename, new after
    assert r["temp_files_left"] <= 2, r  # a killed writer's temp file is swept by the next save


@pytest.mark.slow
def test_killing_a_chat_append_in_every_phase_loses_nothing_reported(tmp_path: Path) -> None:
    r = harness("chat", 500, tmp_path)
    assert all(n >= 1 for n in r["kills_landed"].values()), r
    assert r["journals_out_of_order_or_garbled"] == 0, r
    assert r["runs_losing_a_reported_message"] == 0, r
    assert r["most_torn_lines_seen"] >= 1, r  # a torn line was there to be skipped


def test_a_full_disk_during_a_save_keeps_the_old_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "mine.toml"
    save_profile(Profile("old", (ModelRequest("glm", "chatglm3", "demo:chatglm3"),)), target)
    before = target.read_bytes()
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        save_profile(Profile("new", (ModelRequest("glm", "chatglm3", "demo:chatglm3"),)), target)
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    assert target.read_bytes() == before and load_profile(target).name == "old"
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


async def test_an_append_after_a_torn_last_line_is_not_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTUI_DATA_DIR", str(tmp_path))
    log = await ConversationLog.create("glm", "chatglm3")
    await log.user_message("one")
    with open(log.path, "a") as f:
        f.write('{"type": "message", "role": "user", "cont')  # the disk filled mid-line
    again, t = ConversationLog.open(log.path)
    assert [m.content for m in t.messages] == ["one"]
    await again.user_message("two")  # after a restart, the next message
    t = read_transcript(log.path)
    assert [m.content for m in t.messages] == ["one", "two"] and t.skipped_lines == 1


def test_a_live_writers_temp_file_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "p.toml"
    live = tmp_path / f".p.toml.{os.getppid()}.abc.tmp"  # our parent is alive
    dead = tmp_path / ".p.toml.999999999.abc.tmp"
    live.write_text("x")
    dead.write_text("x")
    save_profile(Profile("p", (ModelRequest("glm", "chatglm3", "demo:chatglm3"),)), target)
    assert live.exists() and not dead.exists()
