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
    from textual.widgets import RichLog

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
        for log in app.dashboard.query("#events").results(RichLog):
            log.clear()
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(80, 24), run_before=two_loads)
