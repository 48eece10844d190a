"""A full disk or an unwritable data folder never ends a conversation or the app
(hostile-server issue, item 6): the user is told once, the chat goes on in memory, nothing
already written is lost."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gputui import journal as store
from gputui.chat.session import ChatSession
from gputui.core.requests import ModelRequest
from gputui.hardware.simulated import SimulatedServer, make_gpus
from gputui.journal import ConversationLog, read_transcript
from gputui.paths import take_notes, timeline_path
from gputui.scheduler import Scheduler
from gputui.scheduler.client import LocalClient
from gputui.scheduler.timeline import Timeline
from tests.fakes.fake_worker import Behaviour, FakeLauncher


class Disk:
    """Journal writes fail as on a full disk (ENOSPC) while `full`; `free()` gives the space back."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = True
        real = store.append_whole

        def append(path: Path, data: str, sync: bool = True) -> None:
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(path, data, sync)

        monkeypatch.setattr(store, "append_whole", append)

    def free(self) -> None:
        self.full = False


async def test_a_disk_that_fills_mid_chat_is_said_once_and_saving_resumes_when_space_comes_back(
        tiny_chatglm3_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 31, N6: a journal that failed once used to stay off for the server's life."""
    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, FakeLauncher(server, [Behaviour(reply="fine thanks")]), timeline=Timeline())
    await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path)))
    session = ChatSession(LocalClient(sched), "glm", "chatglm3")
    first = [e async for e in session.send("saved question")]
    assert [e.event for e in first if e.event != "text"] == ["done"]
    path = session.journal_path
    assert path is not None
    before = path.read_bytes()
    disk = Disk(monkeypatch)
    second = [e async for e in session.send("unsaved question")]
    third = [e async for e in session.send("another one")]
    notices = [e.text for e in second + third if e.event == "notice"]
    assert len(notices) == 1 and "No space left on device" in notices[0] and "memory" in notices[0]
    assert [e.event for e in third][-1] == "done" and "fine" in "".join(e.text for e in third)
    assert [m["content"] for m in session.messages if m["role"] == "user"] == ["saved question", "unsaved question", "another one"]
    assert path.read_bytes() == before  # what was written stays, untouched
    disk.free()
    fourth = [e async for e in session.send("space again")]
    assert [e.text for e in fourth if e.event == "notice"] == [f"this conversation is saved again ({path.name})"]
    t = read_transcript(path)
    assert [m.content for m in t.messages if m.role == "user"] == ["saved question", "unsaved question", "another one",
                                                                   "space again"]
    assert [m.complete for m in t.messages if m.role == "assistant"] == [True] * 4 and t.skipped_lines == 0
    told = [e["event"] for e in sched.timeline.events if e["event"] == "journal"]
    assert len(told) == 2  # every client hears it stopped, and that it resumed
    await sched.close()


async def test_an_unwritable_data_folder_keeps_the_conversation_in_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("GPUTUI_DATA_DIR", str(blocker / "data"))
    take_notes()
    log = await ConversationLog.create("glm", "chatglm3")
    await log.user_message("hello")
    assert log.failure is not None and "Not a directory" in (log.take_notice() or "")
    timeline = Timeline(timeline_path())  # the scheduler's event log: no exception either
    timeline.record("ready", "glm")
    assert timeline.events[-1]["event"] == "ready"
    assert any("event log" in n and "memory" in n for n in take_notes())


@pytest.mark.slow
def test_gputui_chat_with_an_unwritable_data_folder_answers_and_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**os.environ, "GPUTUI_DATA_DIR": str(blocker / "data")}
    out = subprocess.run([sys.executable, "-m", "gputui", "chat", "--demo", "chatglm3", "--max-new-tokens", "4"],
                         input="hello\n", capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "cannot be saved" in out.stderr
    assert "tokens" in out.stderr  # the reply's stats line: it answered
