"""Pictures that matter: the dashboard as an 80x24 SSH terminal and a large one show it."""

from __future__ import annotations

from gputui.hardware.simulated import demo_server
from gputui.tui.app import make_app


def frozen_app():  # type: ignore[no-untyped-def]
    # A fixed clock: utilisation and power stop moving, so the picture is the same every run.
    # A long interval: the picture is taken after exactly three refreshes we ask for.
    return make_app(demo_server(clock=lambda: 1_000_000.0), interval=3600)


async def settle(pilot) -> None:  # type: ignore[no-untyped-def]
    app = pilot.app
    while app.snapshots_applied < 1:  # the poll at start
        await pilot.pause(0.02)
    for target in (2, 3):  # exactly two more, one at a time
        app.action_refresh_now()
        while app.snapshots_applied < target:
            await pilot.pause(0.02)
    await pilot.pause(0.3)


def test_dashboard_in_an_80x24_terminal(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=settle)


def test_dashboard_in_a_large_terminal(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(frozen_app(), terminal_size=(160, 48), run_before=settle)


def test_eight_gpus_in_an_80x24_terminal(snap_compare, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A server with 8 GPUs over SSH: one line per GPU, the models panel below."""
    monkeypatch.setenv("GPUTUI_DEMO_GPUS", "8")
    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=settle)


def app_with_scheduler():  # type: ignore[no-untyped-def]
    """The frozen dashboard with a scheduler behind it (fake workers): what a user who runs
    `gputui` sees before loading anything."""
    from gputui.scheduler import Scheduler
    from gputui.scheduler.client import LocalClient
    from gputui.scheduler.timeline import Timeline
    from tests.fakes.fake_worker import FakeLauncher

    server = demo_server(clock=lambda: 1_000_000.0)
    return make_app(server, interval=3600, client=LocalClient(Scheduler(server, FakeLauncher(server),
                                                                         timeline=Timeline())))


def clear_event_log(app) -> None:  # type: ignore[no-untyped-def]
    from textual.widgets import RichLog

    for log in app.dashboard.query("#events").results(RichLog):
        log.clear()


async def with_load_form(pilot) -> None:  # type: ignore[no-untyped-def]
    from gputui.tui.screens.forms import LoadForm

    await settle(pilot)
    await pilot.press("l")
    while not isinstance(pilot.app.screen, LoadForm):
        await pilot.pause(0.02)
    await pilot.pause(0.3)


def test_the_load_form_in_an_80x24_terminal(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """The form a load starts from: the kind "auto" (config.json says), each GPU with its free memory."""
    assert snap_compare(app_with_scheduler(), terminal_size=(80, 24), run_before=with_load_form)


def test_a_model_ready_and_one_failed_in_an_80x24_terminal(snap_compare, tiny_chatglm3_path) -> None:  # type: ignore[no-untyped-def]
    """The models table after one load worked and one failed, and the GPU line naming the
    model. The event log is cleared before the picture: its lines carry wall-clock times."""
    from gputui.core.requests import ModelRequest
    from gputui.scheduler import Scheduler
    from gputui.scheduler.client import LocalClient
    from gputui.scheduler.timeline import Timeline
    from tests.fakes.fake_worker import Behaviour, FakeLauncher

    server = demo_server(clock=lambda: 1_000_000.0)
    launcher = FakeLauncher(server, [Behaviour(), Behaviour(fatal_in_stage="loading_weights")])
    client = LocalClient(Scheduler(server, launcher, timeline=Timeline()))
    app = make_app(server, interval=3600, client=client)

    async def two_loads(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        await client.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), gpus=("0",)))
        await client.load(ModelRequest("bad", "chatglm3", str(tiny_chatglm3_path), gpus=("0",)))
        app.action_refresh_now()
        await pilot.pause(0.5)
        clear_event_log(app)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(80, 24), run_before=two_loads)


def loaded_app(attached: bool = False):  # type: ignore[no-untyped-def]
    """The frozen dashboard with a scheduler behind it (fake workers answer "hello there", with no
    timings in their stats), and a way to load one ChatGLM3 by hand before the picture."""
    from gputui.core.requests import ModelRequest
    from gputui.scheduler import Scheduler
    from gputui.scheduler.client import LocalClient
    from gputui.scheduler.timeline import Timeline
    from tests.fakes.fake_worker import FakeLauncher

    server = demo_server(clock=lambda: 1_000_000.0)
    client = LocalClient(Scheduler(server, FakeLauncher(server), timeline=Timeline()))
    app = make_app(server, interval=3600, client=client, attached=attached)

    async def load(path: str) -> None:
        await client.load(ModelRequest("glm", "chatglm3", path, gpus=("0",)))
        app.action_refresh_now()

    return app, load


async def until(pilot, cond) -> None:  # type: ignore[no-untyped-def]
    while not cond():
        await pilot.pause(0.02)


def test_a_chat_answered_in_an_80x24_terminal(snap_compare, tiny_chatglm3_path, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A conversation after one question and its streamed answer, with the stats line under it."""
    from textual.widgets import Input

    from gputui.tui.screens.chat import ChatScreen

    monkeypatch.setenv("GPUTUI_DATA_DIR", str(tmp_path / "data"))  # the journal, out of the user's
    app, load = loaded_app()

    async def one_exchange(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        await load(str(tiny_chatglm3_path))
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ChatScreen))
        box = app.screen.query_one(Input)
        box.cursor_blink = False  # a blinking cursor is on in one picture, off in the next
        box.value = "hi, who are you?"
        await pilot.press("enter")
        await until(pilot, lambda: len(app.screen.query(".stats")) > 0)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(80, 24), run_before=one_exchange)


def test_the_quit_dialog_with_a_model_serving(snap_compare, tiny_chatglm3_path) -> None:  # type: ignore[no-untyped-def]
    """q on a dashboard attached to the user's server, with a model ready: leave it serving, or
    unload and stop."""
    from gputui.tui.screens.forms import QuitForm

    app, load = loaded_app(attached=True)

    async def press_q(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        await load(str(tiny_chatglm3_path))
        await pilot.pause(0.3)
        clear_event_log(app)  # it shows behind the dialog, and its lines carry wall-clock times
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, QuitForm))
        # the picture is taken; the app then ends as a dashboard that owns its scheduler (an
        # attached one leaves it to the server, and the fake workers would outlive the test's loop)
        app.attached = False
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(80, 24), run_before=press_q)


def test_the_doctor_with_an_error_explained(snap_compare, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`d`: the findings for this (simulated) machine, and an error message pasted and explained.
    What differs between machines is set: the CUDA variables, the fused decode switched off (so no
    Triton version shows), the home folder."""
    from textual.widgets import Input

    from gputui.core import env
    from gputui.tui.screens.doctor import DoctorScreen

    for variable, _value in env.set_now():
        monkeypatch.delenv(variable.name)
    monkeypatch.setenv("GPUTUI_FUSED_DECODE", "0")
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("HOME", "/home/you")  # no ~/.nv there: the same line everywhere
    app = frozen_app()

    async def doctor(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, DoctorScreen))
        findings = app.screen.query_one("#findings-text")
        await until(pilot, lambda: "running checks" not in str(findings.content))
        app.screen.query_one("#paste", Input).cursor_blink = False
        await pilot.press(*"CUBLAS_STATUS_NOT_INITIALIZED", "enter")
        explanation = app.screen.query_one("#explanation")
        await until(pilot, lambda: str(explanation.content) not in ("", "reading the GPUs…"))
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(100, 40), run_before=doctor)
