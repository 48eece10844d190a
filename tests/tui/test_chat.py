"""Chat as a user does it: type, watch the reply stream, stop it, find it on disk, reopen it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from textual.widgets import Input, Markdown, Static

from gputui.core.requests import ModelRequest
from gputui.hardware.simulated import SimulatedServer, make_gpus
from gputui.journal import list_conversations, read_transcript
from gputui.scheduler import Scheduler
from gputui.scheduler.client import LocalClient
from gputui.scheduler.simulated_launcher import SimulatedLauncher
from gputui.scheduler.timeline import Timeline
from gputui.tui.app import make_app
from gputui.tui.messages import OpenChat, ReopenChat
from gputui.tui.screens.chat import ChatScreen
from gputui.tui.widgets.chat_pane import ChatPane
from tests.fakes.fake_worker import Behaviour, FakeLauncher
from tests.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GPUTUI_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


async def until(cond, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    await eventually(cond, timeout, "timed out waiting", every=0.05)


def pane_text(pane: ChatPane) -> str:
    parts = []
    for w in pane.query("#messages > *"):
        if isinstance(w, Markdown):
            parts.append(w.source)
        elif isinstance(w, Static):
            parts.append(str(w.content))
    return "\n".join(parts)


async def open_chat(app, pilot, name: str) -> ChatPane:  # type: ignore[no-untyped-def]
    app.post_message(OpenChat(name))
    await until(lambda: isinstance(app.screen, ChatScreen))
    await pilot.pause()
    return app.screen.query_one(ChatPane)


async def test_type_stream_persist_and_reopen_with_a_tiny_chatglm3(tiny_chatglm3_path: Path, data_dir: Path) -> None:
    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, SimulatedLauncher(server, spare=False, threads=1), timeline=Timeline())
    app = make_app(server, interval=0.1, client=LocalClient(sched))
    async with app.run_test(size=(120, 40)) as pilot:
        rec = await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), max_context=256,
                                            generation={"max_new_tokens": 24, "temperature": 0.0}))
        assert rec.state == "ready", rec.error
        pane = await open_chat(app, pilot, "glm")
        assert app.screen.focused is pane.query_one("#prompt", Input)
        await pilot.press(*"hello [bold]x[/]")
        await pilot.press("enter")
        await until(lambda: pane.replies == 1)
        await pilot.pause()
        text = pane_text(pane)
        assert "you: hello [bold]x[/]" in text  # shown literally
        assert "24 tokens" in text and "tok/s" in text
        md = [w for w in pane.query(Markdown)][0]
        assert len(md.source) > 0  # the reply streamed into the Markdown view
        # on disk: user message, the reply, complete
        (conv,) = list_conversations()
        t = read_transcript(conv)
        assert [m.role for m in t.messages] == ["user", "assistant"]
        assert t.messages[0].content == "hello [bold]x[/]" and t.messages[1].complete
        # up arrow brings the last message back
        await pilot.press("up")
        assert pane.query_one("#prompt", Input).value == "hello [bold]x[/]"
        # empty input is ignored
        pane.query_one("#prompt", Input).value = "   "
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert pane.replies == 1
        await sched.close()


async def test_stop_mid_reply_keeps_the_partial_reply_marked_incomplete(tiny_chatglm3_path: Path) -> None:
    server = SimulatedServer(make_gpus(1))
    launcher = FakeLauncher(server, [Behaviour(reply=" ".join(f"w{i}" for i in range(200)), token_delay=0.02)])
    sched = Scheduler(server, launcher, timeline=Timeline())
    app = make_app(server, interval=0.1, client=LocalClient(sched))
    async with app.run_test(size=(100, 30)) as pilot:
        await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), max_context=256))
        pane = await open_chat(app, pilot, "glm")
        await pilot.press("h", "i", "enter")
        await until(lambda: "w3" in pane_text(pane))
        await pilot.press("escape")  # stop
        await until(lambda: pane.replies == 1)
        assert "w150" not in pane_text(pane) and "stopped" in pane_text(pane)
        (conv,) = list_conversations()
        reply = read_transcript(conv).messages[1]
        assert reply.content.startswith("w0 w1 w2") and not reply.complete
        await sched.close()


async def test_a_worker_killed_mid_reply_leaves_the_partial_reply_on_disk(tiny_chatglm3_path: Path) -> None:
    server = SimulatedServer(make_gpus(1))
    launcher = FakeLauncher(server, [Behaviour(reply="one two three four five six", die_after_tokens=3, token_delay=0.01)])
    sched = Scheduler(server, launcher, timeline=Timeline(), memory_return_timeout=2)
    app = make_app(server, interval=0.1, client=LocalClient(sched))
    async with app.run_test(size=(100, 30)) as pilot:
        await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), max_context=256))
        pane = await open_chat(app, pilot, "glm")
        await pilot.press("h", "i", "enter")
        await until(lambda: "died mid-reply" in pane_text(pane))
        await until(lambda: sched.models["glm"].state == "crashed")
        (conv,) = list_conversations()
        reply = read_transcript(conv).messages[1]
        assert reply.content == "one two three " and not reply.complete
        # the dashboard's model table says crashed, with the reason
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert "crashed" in str(app.dashboard.query_one("#models").get_row("glm")[2])
        await sched.close()


async def test_a_real_worker_killed_mid_reply(tiny_chatglm3_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL the real worker after its fifth streamed piece: those pieces are on disk (the
    journal is written on the serving side, as the pieces pass)."""
    from gputui import journal as store

    monkeypatch.setattr(store, "FLUSH_EVERY_S", 0.0)
    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, SimulatedLauncher(server, spare=False, threads=1), timeline=Timeline(), memory_return_timeout=5)
    app = make_app(server, interval=0.1, client=LocalClient(sched))
    async with app.run_test(size=(100, 30)) as pilot:
        rec = await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), max_context=512,
                                            generation={"max_new_tokens": 250, "temperature": 0.0, "ignore_stop": True}))
        pid = rec.pid
        pane = await open_chat(app, pilot, "glm")
        real_reply_text = store.ConversationLog.reply_text
        pieces: list[str] = []

        async def reply_text(self: store.ConversationLog, n: int, text: str) -> None:
            pieces.append(text)
            await real_reply_text(self, n, text)
            if len(pieces) == 5:
                os.kill(pid, signal.SIGKILL)

        monkeypatch.setattr(store.ConversationLog, "reply_text", reply_text)
        await pilot.press("h", "i", "enter")
        await until(lambda: "died mid-reply" in pane_text(pane))
        await until(lambda: sched.models["glm"].state == "crashed")
        (conv,) = list_conversations()
        reply = read_transcript(conv).messages[-1]
        assert reply.role == "assistant" and not reply.complete
        assert reply.content.startswith("".join(pieces[:5]))
        assert not any(p.pid == pid for g in server.snapshot().gpus for p in g.processes)
        await sched.close()


async def test_blip2_answers_and_describe_then_discuss_feeds_chatglm3(tiny_chatglm3_path: Path, tiny_blip2_path: Path,
                                                                      tmp_path: Path) -> None:
    from PIL import Image

    img = tmp_path / "cat.png"
    Image.new("RGB", (40, 30), (120, 80, 200)).save(img)
    server = SimulatedServer(make_gpus(2))
    sched = Scheduler(server, SimulatedLauncher(server, spare=False, threads=1), timeline=Timeline())
    app = make_app(server, interval=0.1, client=LocalClient(sched))
    async with app.run_test(size=(140, 40)) as pilot:
        await sched.load(ModelRequest("blip2", "blip2", str(tiny_blip2_path), gpus=("1",)))
        await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), max_context=256,
                                      generation={"max_new_tokens": 8, "temperature": 0.0}))
        pane = await open_chat(app, pilot, "blip2")
        pane.query_one("#prompt", Input).value = f"/image {img} what is it?"
        await pilot.press("enter")
        await until(lambda: pane.replies == 1)
        assert "tokens" in pane_text(pane)
        await pilot.press("escape")
        pane = await open_chat(app, pilot, "glm")
        pane.query_one("#prompt", Input).value = f"/describe {img} what colour is it?"
        await pilot.press("enter")
        await until(lambda: pane.replies == 1)
        text = pane_text(pane)
        assert "blip2 says:" in text
        msgs = pane.session.messages
        assert msgs[0]["content"].startswith(f"An image ({img}) was described by blip2:")
        assert msgs[-2] == {"role": "user", "content": "what colour is it?"}
        await sched.close()


async def test_a_past_conversation_reopens_and_continues(tiny_chatglm3_path: Path, data_dir: Path) -> None:
    from gputui.journal import ConversationLog

    log = await ConversationLog.create("glm", "chatglm3")
    await log.user_message("first question")
    n = log.begin_reply()
    await log.reply_text(n, "first answer")
    await log.end_reply(n, True)
    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, FakeLauncher(server, [Behaviour(reply="second answer")]), timeline=Timeline())
    app = make_app(server, interval=0.1, client=LocalClient(sched))
    async with app.run_test(size=(120, 40)) as pilot:
        await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), max_context=256))
        app.post_message(ReopenChat(log.path))
        await until(lambda: isinstance(app.screen, ChatScreen))
        await pilot.pause(0.2)
        pane = app.screen.query_one(ChatPane)
        assert "first question" in pane_text(pane) and "first answer" in pane_text(pane)
        pane.query_one("#prompt", Input).value = "second question"
        await pilot.press("enter")
        await until(lambda: pane.replies == 1)
        # the worker was sent the whole conversation, old turns included
        sent = pane.session.messages
        assert [m["content"] for m in sent][:3] == ["first question", "first answer", "second question"]
        t = read_transcript(log.path)
        assert [m.content.strip() for m in t.messages] == ["first question", "first answer", "second question", "second answer"]
        await sched.close()


def test_generation_settings_per_conversation() -> None:
    from gputui.chat.commands import apply_settings

    params: dict = {}
    assert apply_settings(params, " max_new_tokens=64 temperature=0.2") == "settings: max_new_tokens=64, temperature=0.2"
    assert params == {"max_new_tokens": 64, "temperature": 0.2}
    assert "top_p must be above 0 and at most 1" in apply_settings(params, " top_p=3")
    for bad in ("temperature=nan", "top_p=0", "max_new_tokens=inf", "max_new_tokens=-5", "temperature=-1"):
        assert "must be" in apply_settings(params, " " + bad), bad
    assert "must be a number" in apply_settings(params, " temperature=hot")
    assert "usage" in apply_settings(params, " colour=blue")
    assert params == {"max_new_tokens": 64, "temperature": 0.2}


async def test_a_stalled_reply_is_left_with_a_second_escape(tiny_chatglm3_path: Path) -> None:
    """The worker stops answering mid-reply (SIGSTOPped, hung): Esc asks it to stop, which it
    never does; Esc again leaves the reply, kept and marked incomplete, and the chat goes on."""
    server = SimulatedServer(make_gpus(1))
    launcher = FakeLauncher(server, [Behaviour(reply="one two three four", stall_after_tokens=2)])
    sched = Scheduler(server, launcher, timeline=Timeline())
    app = make_app(server, interval=0.1, client=LocalClient(sched))
    async with app.run_test(size=(100, 30)) as pilot:
        await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), max_context=256))
        pane = await open_chat(app, pilot, "glm")
        await pilot.press("h", "i", "enter")
        await until(lambda: "two" in pane_text(pane))
        await pilot.press("escape")
        await pilot.pause(0.3)
        assert pane.replying and isinstance(app.screen, ChatScreen)  # the stop was asked, not answered
        await pilot.press("escape")
        await until(lambda: not pane.replying)
        assert isinstance(app.screen, ChatScreen) and "left the reply" in pane_text(pane)
        (conv,) = list_conversations()
        await until(lambda: len(read_transcript(conv).messages) == 2)
        reply = read_transcript(conv).messages[1]
        assert reply.content.startswith("one two") and not reply.complete
        await pilot.press("escape")  # idle now: back to the dashboard
        await until(lambda: not isinstance(app.screen, ChatScreen))
        await sched.close()


async def test_two_messages_sent_quickly_are_not_merged_or_sent_twice(tiny_chatglm3_path: Path) -> None:
    server = SimulatedServer(make_gpus(1))
    launcher = FakeLauncher(server, [Behaviour(reply="a b c d e f", token_delay=0.05)])
    sched = Scheduler(server, launcher, timeline=Timeline())
    app = make_app(server, interval=0.1, client=LocalClient(sched))
    async with app.run_test(size=(100, 30)) as pilot:
        await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), max_context=256))
        pane = await open_chat(app, pilot, "glm")
        box = pane.query_one("#prompt", Input)
        # two Enters before the first reply has started: both reach the pane back to back
        pane.post_message(Input.Submitted(box, "first"))
        pane.post_message(Input.Submitted(box, "second"))
        await until(lambda: pane.replies == 1)
        await pilot.pause(0.3)
        users = [m["content"] for m in pane.session.messages if m["role"] == "user"]
        assert users == ["first"]  # once, alone
        assert any("still replying" in str(n.message) for n in app._notifications)
        box.value = "second"
        await pilot.press("enter")
        await until(lambda: pane.replies == 2)
        assert [m["content"] for m in pane.session.messages if m["role"] == "user"] == ["first", "second"]
        await sched.close()


def fake_chat_app(tiny_chatglm3_path: Path):  # type: ignore[no-untyped-def]
    """An app over a fake worker's model "glm", and its scheduler."""
    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, FakeLauncher(server), timeline=Timeline())
    return make_app(server, interval=0.1, client=LocalClient(sched)), sched


async def test_a_paste_lands_once(tiny_chatglm3_path: Path) -> None:
    """The input's own paste handler runs after ours by itself: calling it too pasted twice."""
    from textual import events

    app, sched = fake_chat_app(tiny_chatglm3_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), max_context=256))
        pane = await open_chat(app, pilot, "glm")
        box = pane.query_one("#prompt", Input)
        box.post_message(events.Paste("hello"))
        await until(lambda: box.value != "")
        await pilot.pause()
        assert box.value == "hello"
        await sched.close()


async def test_a_multi_line_paste_is_sent_whole(tiny_chatglm3_path: Path) -> None:
    """Issue 30: a multi-line paste kept only its first line, silently."""
    from textual import events

    app, sched = fake_chat_app(tiny_chatglm3_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), max_context=256))
        pane = await open_chat(app, pilot, "glm")
        box = pane.query_one("#prompt", Input)
        box.post_message(events.Paste("def f():\r\n    return 1\n\nprint(f())\n"))
        await until(lambda: box.value != "")
        assert box.value == "def f():␤    return 1␤␤print(f())"  # every line, in the one-line box
        await pilot.press("enter")
        await until(lambda: pane.replies == 1)
        assert [m["content"] for m in pane.session.messages if m["role"] == "user"] == \
            ["def f():\n    return 1\n\nprint(f())"]
        await sched.close()
