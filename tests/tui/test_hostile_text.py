"""Outside text through every widget that shows it: nothing reaches the terminal as a control
character, and no bracket is read as markup (hostile-server issue, items 1 and 2).

Each case puts one hostile string where another user, a checkpoint, a model or a journal
would put it, drives the app as a user would, and then reads what the screen would send to
the terminal: the text of every segment the compositor draws. A raw ESC, BEL, C1 or bidi
control there is a hijacked terminal; a crash is a dashboard that exited and took every model
with it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input

from gputui.core.requests import ModelRequest
from gputui.core.text import has_control
from gputui.core.units import MiB
from gputui.hardware.simulated import SimGpu, SimulatedServer, make_gpus
from gputui.scheduler import Scheduler
from gputui.scheduler.client import LocalClient
from gputui.scheduler.timeline import Timeline
from gputui.tui.app import make_app
from gputui.tui.messages import OpenChat, ReopenChat
from gputui.tui.screens.chat import ChatScreen
from tests.fakes.fake_worker import Behaviour, FakeLauncher
from tests.waiting import eventually

# What the attacks used: a window title, cursor moves that rewrite lines, a clipboard write,
# an 8-bit CSI, a right-to-left override, and markup that crashes a parser.
HOSTILE = 'T\x1b]2;PWNED\x07 \x1b[1A\x1b[2K \x1b]52;c;aGk=\x07 \x9b2J \u202eexe.txt [/] [/x] [b]p[x="]'
SHOWN = "␛]2;PWNED␇"  # the same text, drawn
QUOTED = "\\x1b]2;PWNED\\x07"  # or quoted, as repr() writes it in an error message


def drawn(app: Any) -> str:
    """Every character the current screen would write to the terminal, line by line."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip) for strip in strips)


async def settle(pilot: Any, cond: Callable[[], object], what: str) -> None:
    await eventually(cond, 30, what, every=0.05)
    await pilot.pause()


def hostile_checkpoint(root: Path) -> Path:
    """A ChatGLM3 folder whose only tensor has a hostile name and a header that lies about its
    size: preflight refuses it, naming the tensor."""
    folder = root / "bad-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "chatglm", "num_layers": 1, "hidden_size": 8, "ffn_hidden_size": 16,
        "num_attention_heads": 2, "padded_vocab_size": 32, "seq_length": 64}))
    header = json.dumps({HOSTILE: {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    (folder / "tokenizer.model").write_bytes(b"\x0a")
    return folder


async def case_process_table(tmp: Path) -> tuple[Any, Callable[[Any, Any], Awaitable[None]]]:
    server = SimulatedServer(make_gpus(1))
    server.allocate(server.gpus[0].uuid, 4242, 100 * MiB, HOSTILE[:30], "python " + HOSTILE)
    app = make_app(server, interval=0.05)

    async def act(app: Any, pilot: Any) -> None:
        await settle(pilot, lambda: "4242" in drawn(app), "the process never showed")
    return app, act


async def case_gpu_name(tmp: Path) -> tuple[Any, Callable[[Any, Any], Awaitable[None]]]:
    server = SimulatedServer([SimGpu(HOSTILE, "GPU-00000000-0000-0000-0000-000000000001", "00000000:01:00.0", 8 << 30)])
    app = make_app(server, interval=0.05)

    async def act(app: Any, pilot: Any) -> None:
        await settle(pilot, lambda: "GPU 0" in drawn(app), "the GPU never showed")
    return app, act


async def case_load_error(tmp: Path) -> tuple[Any, Callable[[Any, Any], Awaitable[None]]]:
    """The refusal names the tensor: in the toast, the models table's note and the event log."""
    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, FakeLauncher(server), timeline=Timeline())
    app = make_app(server, interval=0.05, client=LocalClient(sched))
    folder = hostile_checkpoint(tmp)

    async def act(app: Any, pilot: Any) -> None:
        app.controller.load(ModelRequest("bad", "chatglm3", str(folder)))
        await settle(pilot, lambda: "bad" in sched.models and sched.models["bad"].state == "failed",
                     "the load was not refused")
        await settle(pilot, lambda: SHOWN in drawn(app) or QUOTED in drawn(app), "the refusal was not shown")
    return app, act


async def case_toast(tmp: Path) -> tuple[Any, Callable[[Any, Any], Awaitable[None]]]:
    app = make_app(SimulatedServer(make_gpus(1)), interval=0.05)

    async def act(app: Any, pilot: Any) -> None:
        app.notify(HOSTILE, title=HOSTILE[:12], severity="error")
        await settle(pilot, lambda: SHOWN in drawn(app), "the toast never showed")
    return app, act


async def case_model_output(tmp: Path) -> tuple[Any, Callable[[Any, Any], Awaitable[None]]]:
    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, FakeLauncher(server, [Behaviour(reply=HOSTILE.replace(" ", "_"))]), timeline=Timeline())
    app = make_app(server, interval=0.1, client=LocalClient(sched))
    folder = tmp / "m"  # never read: fake workers load nothing
    folder.mkdir()

    async def act(app: Any, pilot: Any) -> None:
        await sched.load(ModelRequest("glm", "chatglm3", str(_tiny_glm(tmp))))
        app.post_message(OpenChat("glm"))
        await settle(pilot, lambda: isinstance(app.screen, ChatScreen), "no chat screen")
        app.screen.query_one("#prompt", Input).value = "hi " + HOSTILE
        await pilot.press("enter")
        await settle(pilot, lambda: "tokens" in drawn(app) and SHOWN in drawn(app), "no reply shown")
    return app, act


async def case_reopened_journal(tmp: Path) -> tuple[Any, Callable[[Any, Any], Awaitable[None]]]:
    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, FakeLauncher(server), timeline=Timeline())
    app = make_app(server, interval=0.1, client=LocalClient(sched))
    journal = tmp / "data" / "conversations" / "old.jsonl"
    journal.parent.mkdir(parents=True)
    lines = [{"type": "meta", "model": "glm", "kind": "chatglm3"},
             {"type": "message", "role": "user", "content": HOSTILE},
             {"type": "chunk", "reply": 0, "text": HOSTILE}, {"type": "reply_end", "reply": 0, "complete": True}]
    journal.write_text("".join(json.dumps(x) + "\n" for x in lines))

    async def act(app: Any, pilot: Any) -> None:
        await sched.load(ModelRequest("glm", "chatglm3", str(_tiny_glm(tmp))))
        app.post_message(ReopenChat(journal))
        await settle(pilot, lambda: isinstance(app.screen, ChatScreen), "no chat screen")
        await settle(pilot, lambda: drawn(app).count(SHOWN) >= 2, "the journal was not shown")
    return app, act


async def case_palette(tmp: Path) -> tuple[Any, Callable[[Any, Any], Awaitable[None]]]:
    """A profile file named with markup and escapes, and a past conversation's file name."""
    profiles = tmp / "config" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / 'p[x="]\x1b]2;PWNED\x07.toml').write_text('[[models]]\nname="a"\nkind="chatglm3"\npath="demo:chatglm3"\n')
    server = SimulatedServer(make_gpus(1))
    server.allocate(server.gpus[0].uuid, 31337, 10 * MiB, _me(), "leftover " + HOSTILE)
    sched = Scheduler(server, FakeLauncher(server), timeline=Timeline())
    app = make_app(server, interval=0.05, client=LocalClient(sched))

    async def act(app: Any, pilot: Any) -> None:
        await settle(pilot, lambda: app.snapshot is not None, "no snapshot")
        await pilot.press("ctrl+p")
        await settle(pilot, lambda: "Apply profile" in drawn(app), "the palette did not list profiles")
        await settle(pilot, lambda: SHOWN in drawn(app), "the hostile profile was not listed")
    return app, act


async def case_doctor(tmp: Path) -> tuple[Any, Callable[[Any, Any], Awaitable[None]]]:
    """Another user's name in the findings and in the explanation of a pasted error."""
    server = SimulatedServer(make_gpus(1))
    server.allocate(server.gpus[0].uuid, 4242, server.gpus[0].total_bytes - 10 * MiB, HOSTILE, "job")
    app = make_app(server, interval=0.05)

    async def act(app: Any, pilot: Any) -> None:
        await pilot.press("d")
        await settle(pilot, lambda: "shared with other users" in drawn(app), "no findings")
        box = app.screen.query_one("#paste", Input)
        box.value = "CUBLAS_STATUS_NOT_INITIALIZED"
        await pilot.press("enter")
        await settle(pilot, lambda: "held by pid 4242" in drawn(app), "no explanation")
        assert drawn(app).count(SHOWN) >= 2
    return app, act


async def case_confirm_end_process(tmp: Path) -> tuple[Any, Callable[[Any, Any], Awaitable[None]]]:
    server = SimulatedServer(make_gpus(1))
    server.allocate(server.gpus[0].uuid, 31337, 10 * MiB, _me(), "leftover " + HOSTILE)
    app = make_app(server, interval=0.05, client=LocalClient(Scheduler(server, FakeLauncher(server), timeline=Timeline())))

    async def act(app: Any, pilot: Any) -> None:
        await settle(pilot, lambda: app.snapshot is not None and app.snapshot.gpus[0].processes, "no snapshot")
        proc = app.snapshot.gpus[0].processes[0]
        app.dashboard.confirm_end_process(proc.pid, proc)
        await settle(pilot, lambda: "End process" in drawn(app), "no confirmation")
        assert SHOWN in drawn(app)
    return app, act


async def case_reader_error(tmp: Path) -> tuple[Any, Callable[[Any, Any], Awaitable[None]]]:
    """The whole reader failed with an error text from a library."""
    from gputui.core.snapshot import ServerSnapshot

    class Broken(SimulatedServer):
        def snapshot(self) -> ServerSnapshot:
            return ServerSnapshot(0.0, "nvml", error=HOSTILE)

    app = make_app(Broken(make_gpus(1)), interval=0.05)

    async def act(app: Any, pilot: Any) -> None:
        await settle(pilot, lambda: SHOWN in drawn(app), "the error was not shown")
    return app, act


def _me() -> str:
    import getpass

    return getpass.getuser()


def _tiny_glm(tmp: Path) -> Path:
    """A folder that passes preflight (fake workers load nothing from it)."""
    from gputui.models.tiny import tiny_chatglm3

    return tiny_chatglm3(tmp / "tiny")


CASES = {
    "process command line and user": case_process_table,
    "GPU name": case_gpu_name,
    "checkpoint tensor name in a load refusal": case_load_error,
    "toast": case_toast,
    "model output, streamed": case_model_output,
    "reopened journal": case_reopened_journal,
    "command palette: profile file name, process": case_palette,
    "doctor: findings and explanation": case_doctor,
    "confirmation of ending a process": case_confirm_end_process,
    "reader error": case_reader_error,
}


@pytest.mark.parametrize("case", list(CASES))
async def test_outside_text_is_drawn_inert(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTUI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GPUTUI_CONFIG_DIR", str(tmp_path / "config"))
    app, act = await CASES[case](tmp_path)
    async with app.run_test(size=(160, 50), notifications=True) as pilot:
        await act(app, pilot)
        screen = drawn(app)
        assert not has_control(screen.replace("\n", "")), [line for line in screen.splitlines() if has_control(line)]
        assert app.is_running  # no markup error ended the app
        sched = getattr(app, "scheduler", None)
        if sched is not None:
            await sched.close()
