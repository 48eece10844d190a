"""Loading a model from the dashboard's form, as a user would: type, pick, submit."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, Input, Select

from gputui.hardware.simulated import SimulatedServer, make_gpus
from gputui.scheduler import Scheduler
from gputui.scheduler.client import LocalClient
from gputui.scheduler.timeline import Timeline
from gputui.tui.app import make_app
from gputui.tui.screens.forms import LoadForm
from tests.fakes.fake_worker import FakeLauncher
from tests.waiting import eventually as until


async def test_the_form_offers_a_split_and_the_model_loads_over_both_gpus(tiny_chatglm3_path: Path) -> None:
    server = SimulatedServer(make_gpus(2))
    launcher = FakeLauncher(server)
    sched = Scheduler(server, launcher, timeline=Timeline())
    app = make_app(server, interval=0.05, client=LocalClient(sched))
    async with app.run_test(size=(150, 40)) as pilot:
        await until(lambda: app.snapshot is not None)
        await pilot.press("l")
        await until(lambda: isinstance(app.screen, LoadForm))
        form = app.screen
        form.query_one("#name", Input).value = "glm"
        form.query_one("#path", Input).value = str(tiny_chatglm3_path)
        select = form.query_one("#gpu", Select)
        labels = {value: str(label) for label, value in select._options}  # what the user sees
        both = ",".join(g.uuid for g in server.gpus)
        assert labels[both].startswith("split over GPUs 0 + 1 (free ")
        select.value = both
        await pilot.click("#ok")
        await until(lambda: sched.models.get("glm") is not None and sched.models["glm"].state == "ready")
        assert launcher.started[-1].spec["layer_split"] == [[0, 1], [1, 2]]
        table = app.screen.query_one("#models", DataTable)
        await until(lambda: table.row_count == 1 and str(table.get_row_at(0)[3]) == "0+1")
    await sched.close()


async def test_the_kind_comes_from_the_folder_unless_picked(tiny_chatglm3_path: Path, tmp_path: Path) -> None:
    """The kind field starts at "auto": config.json's model_type names it; a folder that names
    none gives one line and the form stays open."""
    server = SimulatedServer(make_gpus(1))
    launcher = FakeLauncher(server)
    sched = Scheduler(server, launcher, timeline=Timeline())
    app = make_app(server, interval=0.05, client=LocalClient(sched))
    (tmp_path / "config.json").write_text('{"model_type": "gpt_oss"}')
    async with app.run_test(size=(150, 40)) as pilot:
        await until(lambda: app.snapshot is not None)
        await pilot.press("l")
        await until(lambda: isinstance(app.screen, LoadForm))
        form = app.screen
        assert form.query_one("#kind", Select).value == "auto"
        form.query_one("#name", Input).value = "odd"
        form.query_one("#path", Input).value = str(tmp_path)
        await pilot.click("#ok")
        await until(lambda: any("is not one gputui runs" in str(n.message) for n in app._notifications))
        assert isinstance(app.screen, LoadForm)
        form.query_one("#name", Input).value = "glm"
        form.query_one("#path", Input).value = str(tiny_chatglm3_path)
        form.query_one("#path", Input).focus()
        await pilot.press("enter")  # submitted from the folder field (the toast covers the buttons)
        await until(lambda: sched.models.get("glm") is not None and sched.models["glm"].state == "ready")
        assert sched.models["glm"].request.kind == "chatglm3"
    await sched.close()
