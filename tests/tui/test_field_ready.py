"""The dashboard in the terminal a user actually has: 80x24 over SSH with 8 GPUs, destructive
keys that name their target and ask, text boxes whose letters are text, a load form that knows
the models, Tab between two conversations, and a doctor that knows the user's own models."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from textual.widgets import DataTable, Input, Select

from gputui.core.requests import ModelRequest
from gputui.core.units import GiB, MiB
from gputui.hardware.simulated import SimulatedServer, make_gpus
from gputui.scheduler import Scheduler
from gputui.scheduler.client import LocalClient
from gputui.scheduler.simulated_launcher import SimulatedLauncher
from gputui.scheduler.timeline import Timeline
from gputui.tui.app import make_app
from gputui.tui.messages import OpenChat, SchedulerEvent
from tests.fakes.fake_worker import Behaviour, FakeLauncher
from tests.waiting import eventually


async def until(cond, timeout: float = 60, what: str = "the screen never showed it") -> None:  # type: ignore[no-untyped-def]
    """A condition, with room for a loaded 2-core CI machine."""
    await eventually(cond, timeout, what)


def screen_lines(app) -> list[str]:  # type: ignore[no-untyped-def]
    """What the terminal shows, line by line (the compositor's output, as tmux would capture)."""
    return ["".join(seg.text for seg in strip) for strip in app.screen._compositor.render_strips()]


def eight_gpus() -> tuple[SimulatedServer, Scheduler, FakeLauncher]:
    server = SimulatedServer(make_gpus(8, 80 * GiB))
    server.allocate(server.gpus[5].uuid, 4242, 30 * GiB, "alice", "python train.py")
    launcher = FakeLauncher(server)
    return server, Scheduler(server, launcher, timeline=Timeline()), launcher


async def test_eight_gpus_and_every_models_state_fit_80x24(tiny_chatglm3_path: Path) -> None:
    server, sched, launcher = eight_gpus()
    launcher.behaviours = [Behaviour(), Behaviour(), Behaviour(fatal_in_stage="loading_weights")]
    app = make_app(server, interval=0.05, client=LocalClient(sched))
    async with app.run_test(size=(80, 24)):
        for i, name in enumerate(("glm-a", "glm-b", "broken")):
            sched.submit_load(ModelRequest(name, "chatglm3", str(tiny_chatglm3_path), gpus=(str(i + 1),)))
        await until(lambda: {r.state for r in sched.models.values()} == {"ready", "failed"}, 60,
                    str({n: (r.state, r.error) for n, r in sched.models.items()}))
        await until(lambda: app.dashboard.compact)
        await until(lambda: all(n in "\n".join(screen_lines(app)) for n in ("glm-a", "broken", "alice", "f Panel")))
        # the models table redraws on its own event: wait for each row's state, not only its name
        # (the name can show first in the event log; this once failed under CI's load)
        states = (("glm-a", "ready"), ("glm-b", "ready"), ("broken", "failed"))
        await until(lambda: all(any(n in line and st in line for line in screen_lines(app)) for n, st in states))
        lines = screen_lines(app)
        text = "\n".join(lines)
        assert len(lines) == 24
        for i in range(8):  # every GPU has its row
            assert any(line.lstrip().startswith(f"{i} ") for line in lines), (i, text)
        assert "alice" in text and "glm-a" in text
        for name, state in states:
            assert any(name in line and state in line for line in lines), (name, text)
        assert "u Unload" in text and "f Panel" in text and "q Quit" in text  # the footer fits


async def test_v_switches_between_panels_and_one_line_per_gpu() -> None:
    server, sched, _ = eight_gpus()
    app = make_app(server, interval=0.05, client=LocalClient(sched))
    async with app.run_test(size=(160, 48)) as pilot:
        await until(lambda: app.snapshots_applied > 0)
        assert app.dashboard.compact  # 8 panels do not fit 48 lines
        await pilot.press("v")
        await until(lambda: len(app.dashboard.query("GpuPanel")) == 8)
        assert not app.dashboard.compact
        await pilot.press("v")
        assert app.dashboard.compact and app.dashboard.query_one("#gpu-table").display


async def test_u_names_the_model_and_asks_before_unloading(tiny_chatglm3_path: Path) -> None:
    from gputui.tui.screens.forms import ConfirmForm

    server, sched, _ = eight_gpus()
    app = make_app(server, interval=0.05, client=LocalClient(sched))
    async with app.run_test(size=(80, 24)) as pilot:
        await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), gpus=("2",)))
        table = app.dashboard.query_one("#models", DataTable)
        await until(lambda: table.row_count == 1)
        await pilot.press("u")
        await until(lambda: isinstance(app.screen, ConfirmForm))
        assert "Unload glm (chatglm3, ready, GPU 2" in app.screen.question
        await pilot.press("escape")  # no
        await pilot.pause(0.2)
        assert sched.models["glm"].state == "ready"
        await pilot.press("u")
        await until(lambda: isinstance(app.screen, ConfirmForm))
        await pilot.click("#ok")
        await until(lambda: sched.models["glm"].state == "unloaded", 30)
    await sched.close()


async def test_letters_typed_in_text_boxes_never_quit_or_unload(tiny_chatglm3_path: Path) -> None:
    """q quits and u unloads from the dashboard; in the doctor's paste box, a chat input or the
    load form they are letters."""
    from gputui.tui.screens.doctor import DoctorScreen
    from gputui.tui.screens.forms import LoadForm

    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, SimulatedLauncher(server, spare=False, threads=1), timeline=Timeline())
    app = make_app(server, interval=0.05, client=LocalClient(sched))
    async with app.run_test(size=(80, 24)) as pilot:
        await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), max_context=128))
        await pilot.press("d")
        await until(lambda: isinstance(app.screen, DoctorScreen))
        await pilot.press("q", "u", "l")
        assert app.screen.query_one("#paste", Input).value == "qul"
        await pilot.press("escape")
        await pilot.press("l")
        await until(lambda: isinstance(app.screen, LoadForm))
        await pilot.press("q", "u")  # the known-models list has the focus: not text, and still no quit
        assert app.is_running and isinstance(app.screen, LoadForm)
        app.screen.query_one("#name", Input).focus()
        await pilot.press("q", "u")
        assert app.screen.query_one("#name", Input).value == "qu"
        await pilot.press("escape")
        app.post_message(OpenChat("glm"))
        await until(lambda: app.screen.query("#prompt"))
        await pilot.press("q", "u", "d")
        assert app.screen.query_one("#prompt", Input).value == "qud"
        assert app.is_running and sched.models["glm"].state == "ready"
    await sched.close()


async def test_the_load_form_offers_known_models_and_loads_demo_name(tiny_chatglm3_path: Path,
                                                                     monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from gputui.scheduler import profiles_runner
    from gputui.tui.screens.forms import LoadForm

    monkeypatch.setattr(profiles_runner, "demo_model_paths", lambda: {"chatglm3": str(tiny_chatglm3_path)})
    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, SimulatedLauncher(server, spare=False, threads=1), timeline=Timeline())
    app = make_app(server, interval=0.05, client=LocalClient(sched))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: app.snapshot is not None)
        await pilot.press("l")
        await until(lambda: isinstance(app.screen, LoadForm))
        form = app.screen
        offered = {(m.name, m.path) for m in form.known}
        assert ("chatglm3", "demo:chatglm3") in offered and ("blip2", "demo:blip2") in offered
        known = form.query_one("#known", Select)
        known.value = next(i for i, m in enumerate(form.known) if m.path == "demo:chatglm3")
        await until(lambda: form.query_one("#path", Input).value == "demo:chatglm3")
        assert form.query_one("#name", Input).value == "chatglm3"
        ok = form.query_one("#ok")
        assert ok.region.bottom <= 24 and ok.region.right <= 80  # the buttons are on screen at 80x24
        await pilot.click("#ok")
        await until(lambda: "chatglm3" in sched.models and sched.models["chatglm3"].state == "ready", 60)
        assert sched.models["chatglm3"].request.path == str(tiny_chatglm3_path)
    await sched.close()


async def test_tab_moves_between_two_conversations_and_the_focused_one_shows(tiny_chatglm3_path: Path) -> None:
    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, SimulatedLauncher(server, spare=False, threads=1), timeline=Timeline())
    app = make_app(server, interval=0.05, client=LocalClient(sched))
    async with app.run_test(size=(120, 30)) as pilot:
        for name in ("a", "b"):
            await sched.load(ModelRequest(name, "chatglm3", str(tiny_chatglm3_path), max_context=128))
        app.post_message(OpenChat("a"))
        await until(lambda: app.screen.query("#prompt"))
        await pilot.press("ctrl+t")
        await until(lambda: len(app.screen.query("ChatPane")) == 2)
        left, right = app.screen.query("ChatPane")
        left.query_one("#prompt", Input).focus()
        await pilot.press("h", "i")
        for _ in range(4):  # Tab, Tab, ...: always one of the two inputs
            await pilot.press("tab")
            assert isinstance(app.screen.focused, Input) and app.screen.focused.id == "prompt"
        await pilot.press("tab")
        assert app.screen.focused is right.query_one("#prompt")
        assert right.has_pseudo_class("focus-within") and not left.has_pseudo_class("focus-within")
        assert left.query_one("#prompt", Input).value == "hi"  # what was typed is still there
    await sched.close()


async def test_the_doctor_does_not_call_the_users_own_models_other_users(tiny_chatglm3_path: Path) -> None:
    from textual.widgets import Static

    from gputui.tui.screens.doctor import DoctorScreen

    server = SimulatedServer(make_gpus(2))
    server.allocate(server.gpus[1].uuid, 4242, 10 * GiB, "alice", "python train.py")
    sched = Scheduler(server, SimulatedLauncher(server, spare=False, threads=1), timeline=Timeline())
    app = make_app(server, interval=0.05, client=LocalClient(sched))
    async with app.run_test(size=(120, 40)) as pilot:
        await sched.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), gpus=("0",), max_context=128))
        await pilot.press("d")
        await until(lambda: isinstance(app.screen, DoctorScreen))
        findings = app.screen.query_one("#findings-text", Static)
        await until(lambda: "running checks" not in str(findings.content), 30)
        text = str(findings.content)
        assert "GPU 1" in text and "alice" in text  # another user: said
        assert not any(line.startswith("   info GPU 0") and "other users" in line for line in text.splitlines())
    await sched.close()


async def test_monitor_only_is_said_on_the_status_line_for_as_long_as_it_holds() -> None:
    server = SimulatedServer(make_gpus(1))
    app = make_app(server, interval=0.05, client=None, lock_note="GPU actions are off: test")
    async with app.run_test(size=(80, 24)):
        await until(lambda: "MONITOR ONLY" in "\n".join(screen_lines(app)[-3:]))


class LoopTelemetry:
    """GPU readings answered on the app's own loop, as an attached --demo dashboard's are (the
    server's reply arrives there): a snapshot asked from that loop can only time out."""

    backend = "simulated"

    def __init__(self, server: SimulatedServer) -> None:
        self.server = server
        self.loop: asyncio.AbstractEventLoop | None = None

    def snapshot(self):  # type: ignore[no-untyped-def]
        import concurrent.futures

        from gputui.core.snapshot import ServerSnapshot

        async def read():  # type: ignore[no-untyped-def]
            return self.server.snapshot()

        if self.loop is None:
            return self.server.snapshot()
        try:
            return asyncio.run_coroutine_threadsafe(read(), self.loop).result(3)
        except concurrent.futures.TimeoutError:
            return ServerSnapshot(time.time(), self.backend, error="the server's GPU reading failed: timed out")

    def close(self) -> None:
        pass


async def test_the_doctor_explains_without_blocking_the_dashboard_loop() -> None:
    """Issue 30: in an attached --demo dashboard, Enter in the doctor's paste box asked for a
    snapshot on the UI loop that the answer needed: ~10 s frozen, then 'GPU state unavailable'."""
    from textual.widgets import Input, Static

    from gputui.tui.screens.doctor import DoctorScreen

    server = SimulatedServer(make_gpus(1))
    server.allocate(server.gpus[0].uuid, 4242, server.gpus[0].total_bytes - 10 * MiB, "alice", "job")
    telemetry = LoopTelemetry(server)
    app = make_app(telemetry, interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        telemetry.loop = asyncio.get_running_loop()
        await pilot.press("d")
        await until(lambda: isinstance(app.screen, DoctorScreen))
        app.screen.query_one("#paste", Input).value = "CUBLAS_STATUS_NOT_INITIALIZED"
        await pilot.press("enter")
        explanation = app.screen.query_one("#explanation", Static)
        await until(lambda: "pid 4242" in str(explanation.content) or "unavailable" in str(explanation.content), 60)
        assert "pid 4242" in str(explanation.content), str(explanation.content)


class SlowServerTelemetry:
    """A starting --demo server: its first readings do not come in time, then they do."""

    backend = "simulated"

    def __init__(self, server: SimulatedServer, misses: int) -> None:
        self.server, self.misses = server, misses

    def snapshot(self):  # type: ignore[no-untyped-def]
        from gputui.core.snapshot import ServerSnapshot

        if self.misses > 0:
            self.misses -= 1
            return ServerSnapshot(time.time(), self.backend, error="the server's GPU reading failed: TimeoutError",
                                  transient=True)
        return self.server.snapshot()

    def close(self) -> None:
        pass


async def test_a_starting_demo_server_is_waited_for_never_called_no_gpu() -> None:
    """Issue 30: under load, --demo flashed 'No GPU can be read here... (empty reason)... model
    actions are off', even on a first run."""
    from gputui.tui.app import GpuTuiApp

    telemetry = SlowServerTelemetry(SimulatedServer(make_gpus(1)), misses=10**6)
    app = make_app(telemetry, interval=0.05)
    async with app.run_test(size=(100, 30)):
        await until(lambda: "Waiting for the GPU readings" in "\n".join(screen_lines(app)))
        assert "No GPU can be read here" not in "\n".join(screen_lines(app))
        telemetry.misses = 0
        await until(lambda: "Waiting for the GPU readings" not in "\n".join(screen_lines(app)))
    assert isinstance(app, GpuTuiApp)


async def test_a_reset_after_a_reconnect_draws_only_the_new_servers_models(tiny_chatglm3_path: Path) -> None:
    """After a reconnect to another server, rows of models it does not hold were left behind."""
    from gputui.api.views import Event

    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, FakeLauncher(server), timeline=Timeline())
    app = make_app(server, interval=0.05, client=LocalClient(sched))
    async with app.run_test(size=(120, 40)):
        for name in ("kept", "gone"):
            await sched.load(ModelRequest(name, "chatglm3", str(tiny_chatglm3_path), max_context=128))
        table = app.dashboard.query_one("#models", DataTable)
        await until(lambda: table.row_count == 2)
        kept = sched.view("kept")
        assert kept is not None
        app.post_message(SchedulerEvent(Event(1, time.time(), "reset", None, {"models": [kept.to_json()]})))
        await until(lambda: table.row_count == 1)
        assert "kept" in "\n".join(screen_lines(app))
    await sched.close()
