"""A kind is one runtime and one registry entry (client-seam issue, item 4): a third, test-only
kind, declared by an entry point of a package (tests/fakes/echo_kind.py makes its metadata), loads in a real CPU worker, answers through the
client and a ChatSession, and chats in the dashboard - with no change to tui/, chat/ or the
scheduler."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from textual.widgets import Input

from gputui.chat.session import ChatSession
from gputui.core import kinds
from gputui.core.requests import ModelRequest
from gputui.hardware.simulated import SimulatedServer, make_gpus
from gputui.scheduler import Scheduler
from gputui.scheduler.client import LocalClient
from gputui.scheduler.simulated_launcher import SimulatedLauncher
from gputui.scheduler.timeline import Timeline
from gputui.tui.app import make_app
from gputui.tui.messages import OpenChat
from gputui.tui.screens.chat import ChatScreen
from tests.fakes.echo_kind import declare_in
from tests.waiting import eventually

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def echo_kind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> kinds.ModelKind:
    plugins = declare_in(tmp_path / "site")
    monkeypatch.syspath_prepend(str(plugins))
    monkeypatch.setenv("PYTHONPATH", f"{REPO}:{plugins}")  # the workers find the package too
    monkeypatch.setattr(kinds, "KINDS", dict(kinds.KINDS))  # this test's kinds only
    assert "echo" not in kinds.KINDS
    kinds.read_plugins(again=True)
    return kinds.kind_named("echo")


def echo_checkpoint(root: Path) -> Path:
    folder = root / "echo"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gputui-echo", "hidden_size": 8}))
    header = json.dumps({"weight": {"dtype": "F32", "shape": [8, 8], "data_offsets": [0, 256]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(256))
    return folder


def client_with_echo_workers() -> LocalClient:
    server = SimulatedServer(make_gpus(1))
    # the workers register the kind too, from the same module
    env = {"PYTHONPATH": os.environ["PYTHONPATH"]}  # the echo_kind fixture's: the plugin's package
    return LocalClient(Scheduler(server, SimulatedLauncher(server, spare=False, threads=1, extra_env=env),
                                 timeline=Timeline()))


async def test_a_third_kind_loads_and_answers_through_the_client(echo_kind: kinds.ModelKind, tmp_path: Path) -> None:
    client = client_with_echo_workers()
    try:
        view = await client.load(ModelRequest("mirror", "echo", str(echo_checkpoint(tmp_path))))
        assert view.ready, view.error
        assert view.runtime == {"decode": "echo"} and view.predicted_bytes and view.measured_bytes
        session = ChatSession(client, "mirror", "echo")
        events = [e async for e in session.send("hello there world")]
        assert "".join(e.text for e in events if e.event == "text") == "dlrow ereht olleh"
        assert events[-1].event == "done"
        assert (await client.unload("mirror")).returned
    finally:
        await client.close()


async def test_a_third_kind_chats_in_the_dashboard(echo_kind: kinds.ModelKind, tmp_path: Path) -> None:
    client = client_with_echo_workers()
    app = make_app(client.scheduler.telemetry, interval=0.1, client=client)
    async with app.run_test(size=(120, 40)) as pilot:
        await client.load(ModelRequest("mirror", "echo", str(echo_checkpoint(tmp_path))))
        app.post_message(OpenChat("mirror"))
        await eventually(lambda: isinstance(app.screen, ChatScreen), 30)
        pane = app.screen.query_one("ChatPane")
        assert pane.query_one("#prompt", Input).placeholder == echo_kind.input_hint
        pane.query_one("#prompt", Input).value = "abc def"
        await pilot.press("enter")
        await eventually(lambda: pane.replies == 1, 60)
        assert "fed cba" in "".join(m.source for m in pane.query("Markdown"))
