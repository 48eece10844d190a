"""The dashboard attached to a server, driven as a user would (pilot): it draws the server's
models and event log at once, chats through the server, and q leaves the models serving (or,
with u, unloads them and stops the server)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from textual.widgets import DataTable, Input, RichLog

from gputui.core.requests import ModelRequest
from gputui.hardware.simulated import demo_server
from gputui.remote.client import RemoteClient
from gputui.tui.app import make_app
from gputui.tui.messages import OpenChat
from gputui.tui.screens.chat import ChatScreen
from gputui.tui.screens.forms import QuitForm
from tests.server.conftest import Served
from tests.waiting import eventually

pytestmark = pytest.mark.slow


def ps() -> dict:  # type: ignore[type-arg]
    out = subprocess.run([sys.executable, "-m", "gputui", "ps", "--demo", "--json"], capture_output=True, text=True,
                         timeout=120)
    return json.loads(out.stdout)


async def test_attach_chat_quit_leaving_then_stopping(served: Served) -> None:
    loader = await RemoteClient.connect(served.socket)
    assert (await loader.load(ModelRequest("glm", "chatglm3", "demo:chatglm3", max_context=256))).ready
    await loader.close()

    client = await RemoteClient.connect(served.socket)
    app = make_app(demo_server(), interval=0.1, client=client, attached=True)
    async with app.run_test(size=(140, 40)) as pilot:
        table = app.dashboard.query_one("#models", DataTable)
        await eventually(lambda: table.row_count == 1, 30, "the server's model was not drawn")
        assert "ready" in str(table.get_row("glm")[2])
        log = app.dashboard.query_one("#events", RichLog)
        await eventually(lambda: any(" ready " in line.text for line in log.lines), 30)  # the event log since the server started
        app.post_message(OpenChat("glm"))
        await eventually(lambda: isinstance(app.screen, ChatScreen), 30)
        pane = app.screen.query_one("ChatPane")
        pane.query_one("#prompt", Input).value = "hello"
        await pilot.press("enter")
        await eventually(lambda: pane.replies == 1, 60, "no reply through the server")
        await pilot.press("escape")
        await pilot.press("q")
        await eventually(lambda: isinstance(app.screen, QuitForm), 30, "quit did not ask")
        await pilot.press("enter")  # leave them serving
        await eventually(lambda: app.return_code == 0, 30)
    await client.close()
    assert [m["name"] for m in ps()["models"]] == ["glm"] and served.proc.poll() is None

    client = await RemoteClient.connect(served.socket)
    app = make_app(demo_server(), interval=0.1, client=client, attached=True)
    async with app.run_test(size=(140, 40)) as pilot:
        await eventually(lambda: app.dashboard.query_one("#models", DataTable).row_count == 1, 30)
        await pilot.press("q")
        await eventually(lambda: isinstance(app.screen, QuitForm), 30)
        await pilot.press("u")  # unload them and stop the server
        await eventually(lambda: app.return_code == 0, 60)
    await client.close()
    assert served.proc.wait(60) == 0 and ps()["server"] is None
