"""No command's exception ends the dashboard (hostile-server issue, item 3): a failed command is
a message, and the models stay up."""

from __future__ import annotations

from pathlib import Path

import pytest

from gputui.core.requests import ModelRequest
from gputui.hardware.simulated import SimulatedServer, make_gpus
from gputui.scheduler import Scheduler
from gputui.scheduler.client import LocalClient
from gputui.scheduler.timeline import Timeline
from gputui.tui.app import make_app
from gputui.tui.messages import ApplyProfile
from tests.fakes.fake_worker import FakeLauncher
from tests.waiting import eventually


def notes(app) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(n.message) for n in app._notifications]


async def test_a_profile_that_puts_a_loaded_model_elsewhere_is_a_message(
        tiny_chatglm3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTUI_CONFIG_DIR", str(tmp_path))
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "elsewhere.toml").write_text(
        f'[[models]]\nname = "glm"\nkind = "chatglm3"\npath = "{tiny_chatglm3_path}"\ngpus = ["1"]\nmax_context = 256\n')
    server = SimulatedServer(make_gpus(2))
    sched = Scheduler(server, FakeLauncher(server), timeline=Timeline())
    app = make_app(server, interval=0.05, client=LocalClient(sched))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        rec = await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), gpus=("0",), max_context=256))
        assert rec.state == "ready"
        app.post_message(ApplyProfile("elsewhere"))
        await eventually(lambda: any("GPU 1" in n and "glm" in n for n in notes(app)), 20,
                         "the profile's disagreement was not explained")
        await pilot.pause()
        assert app.is_running and app.return_code is None
        assert sched.models["glm"].state == "ready" and sched.models["glm"].placement.gpu_index == 0
        await sched.close()


async def test_an_exception_inside_any_command_is_a_message(tiny_chatglm3_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a command's code raises, the app reports it and keeps running."""
    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, FakeLauncher(server), timeline=Timeline())
    app = make_app(server, interval=0.05, client=LocalClient(sched))

    def broken(*_a, **_k):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug [/x] in a command")

    monkeypatch.setattr("gputui.scheduler.profiles_runner.apply_profile", broken)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        app.post_message(ApplyProfile(str(tiny_chatglm3_path.parent / "nope.toml")))
        app.post_message(ApplyProfile("demo"))
        await eventually(lambda: any("a bug [/x] in a command" in n for n in notes(app)), 20,
                         "the failure was not reported")
        await pilot.pause()
        assert app.is_running
        await sched.close()
