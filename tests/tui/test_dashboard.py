"""The dashboard driven as a user would, through Textual's pilot."""

from __future__ import annotations

import asyncio
import io

from textual.widgets import Static

from gputui.core.units import MiB
from gputui.hardware.simulated import SimulatedServer, demo_server, make_gpus
from gputui.scheduler.client import LocalClient
from gputui.tui.app import SIMULATED_BANNER, make_app
from tests.waiting import eventually


async def wait_for_refreshes(app, n: int = 1, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    target = app.snapshots_applied + n
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while app.snapshots_applied < target:
        assert loop.time() < end, "the dashboard did not refresh"
        await asyncio.sleep(0.02)


def screen_text(app) -> str:  # type: ignore[no-untyped-def]
    """The plain text of every Static on the screen, tables included, as a user reads it."""
    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    for w in app.screen.query(Static):
        console.print(w.content)
    return console.export_text()


async def test_panels_show_the_simulated_gpus_and_the_banner() -> None:
    app = make_app(demo_server(), interval=0.05)
    async with app.run_test(size=(100, 40)):
        await eventually(lambda: "alice" in screen_text(app))
        text = screen_text(app)
        assert SIMULATED_BANNER in text
        assert "GPU 0" in text and "GPU 1" in text
        assert "alice" in text and "30720" in text


async def test_a_process_appearing_shows_after_one_refresh_and_leaves_after_exit() -> None:
    server = SimulatedServer(make_gpus(1))
    app = make_app(server, interval=0.05)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for_refreshes(app)
        assert "bigjob" not in screen_text(app)
        server.allocate(server.gpus[0].uuid, 31337, 10 * 1024 * MiB, "carol", "python bigjob.py")
        await wait_for_refreshes(app, 2)
        await pilot.pause()
        assert "bigjob" in screen_text(app) and "10240" in screen_text(app)
        server.release(31337)
        await wait_for_refreshes(app, 2)
        await pilot.pause()
        assert "bigjob" not in screen_text(app)


async def test_markup_in_a_command_line_is_shown_literally() -> None:
    server = SimulatedServer(make_gpus(1))
    server.allocate(server.gpus[0].uuid, 5, 1 * MiB, "eve", "python x.py [/] [link=http://x]y[/link] [bold]")
    app = make_app(server, interval=0.05)
    async with app.run_test(size=(120, 30)):
        await eventually(lambda: "[/] [link=http://x]y[/link]" in screen_text(app))


async def test_a_lost_gpu_is_marked_and_the_other_keeps_updating() -> None:
    server = SimulatedServer(make_gpus(2))
    app = make_app(server, interval=0.05)
    async with app.run_test(size=(100, 40)):
        await wait_for_refreshes(app)
        server.lose(0)
        server.allocate(server.gpus[1].uuid, 77, 5 * MiB, "dan", "still-updating")
        await eventually(lambda: app.query_one("#gpu-0").has_class("lost"))
        await eventually(lambda: "GPU is lost" in screen_text(app) and "still-updating" in screen_text(app))


async def test_a_nearly_full_gpu_is_flagged_with_the_cublas_warning() -> None:
    server = SimulatedServer(make_gpus(1))
    server.allocate(server.gpus[0].uuid, 9, server.gpus[0].total_bytes - 50 * MiB, "bob", "hog")
    app = make_app(server, interval=0.05)
    async with app.run_test(size=(120, 30)):
        await eventually(lambda: app.query("#gpu-0") and app.query_one("#gpu-0").has_class("tight"))
        await eventually(lambda: "CUBLAS_STATUS_ALLOC_FAILED" in screen_text(app))


async def test_keys_work_while_the_reader_hangs() -> None:
    """An NVML call that never returns must not freeze the keys; the data is marked stale."""
    import threading

    gate = threading.Event()
    server = SimulatedServer(make_gpus(1))
    real = server.snapshot
    calls = {"n": 0}

    def hanging_snapshot():  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 1:
            gate.wait(10)
        return real()

    server.snapshot = hanging_snapshot  # type: ignore[method-assign]
    app = make_app(server, interval=0.05)
    async with app.run_test(size=(100, 30)) as pilot:
        while app.snapshots_applied < 1:
            await asyncio.sleep(0.02)
        side = app.dashboard.query_one("#side")
        shown = side.display
        await pilot.press("f")  # a key is handled while the reader thread is stuck
        await eventually(lambda: side.display != shown, what="f did not toggle the side panel")
        await eventually(lambda: "stale" in str(app.query_one("#status-line", Static).render()), timeout=8)
        gate.set()
        await pilot.press("q")
    assert app.return_code in (0, None)


async def test_q_quits() -> None:
    """q asks the app to exit, while it runs (leaving run_test stops any app: not the test)."""
    app = make_app(demo_server(), interval=0.05)
    async with app.run_test() as pilot:
        await wait_for_refreshes(app)
        assert app.return_code is None
        await pilot.press("q")
        await eventually(lambda: app.return_code == 0, what="q did not exit the app")


async def test_fits_an_80x24_terminal() -> None:
    app = make_app(demo_server(), interval=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for_refreshes(app, 1)
        await pilot.pause()
        assert app.dashboard.compact  # two 10-line panels and the models do not fit 24 lines
        table = app.dashboard.query_one("#gpu-table")
        assert table.region.right <= 80 and table.region.bottom < 24
        assert "alice" in screen_text(app) and app.dashboard.query_one("#side").display


async def test_end_my_own_process_after_confirming_and_see_the_memory_back() -> None:
    import getpass

    from gputui.scheduler import Scheduler
    from gputui.scheduler.timeline import Timeline
    from tests.fakes.fake_worker import FakeLauncher

    server = SimulatedServer(make_gpus(1))
    server.allocate(server.gpus[0].uuid, 9001, 5 * 1024 * MiB, getpass.getuser(), "python leftover [x].py")
    server.allocate(server.gpus[0].uuid, 9002, 1024 * MiB, "somebody-else", "their job")
    sched = Scheduler(server, FakeLauncher(server), timeline=Timeline())
    app = make_app(server, interval=0.05, client=LocalClient(sched))
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: app.snapshot is not None and len(app.snapshot.gpus[0].processes) == 2)
        offered = app.controller.my_processes(app.snapshot)
        assert [pid for _, pid, _ in offered] == [9001]  # never another user's process
        app.dashboard.confirm_end_process(9001, offered[0][2])
        await pilot.pause()
        await pilot.press("enter")  # "Yes" has the focus
        await eventually(lambda: "leftover" not in screen_text(app))
        assert "their job" in screen_text(app)
        await sched.close()


async def test_without_nvml_the_dashboard_opens_explains_and_keeps_gpu_actions_off() -> None:
    """Fault 6: no driver / NVML fails at init."""
    from gputui.hardware.unavailable import UnavailableTelemetry

    reason = "NVML could not start (NVML Shared Library Not Found): no NVIDIA driver here? try gputui --demo"
    app = make_app(UnavailableTelemetry(reason), interval=0.05, client=None,
                   lock_note=f"GPU actions are off: {reason}")
    async with app.run_test(size=(100, 30)) as pilot:
        await eventually(lambda: "GPU actions are disabled" in screen_text(app))
        assert reason in screen_text(app) and "No GPU can be read here" in screen_text(app)
        await pilot.press("l")  # load: refused with the reason, nothing crashes
        await eventually(lambda: any("GPU actions are off" in str(n.message) for n in app._notifications))
        await pilot.press("q")


async def test_a_failed_first_reading_leaves_no_note_once_the_gpus_are_read() -> None:
    """A server that is still starting can answer its first snapshot with an error; once the
    GPUs are read, "No GPU can be read here" goes away."""
    import dataclasses

    server = demo_server()
    real = server.snapshot
    calls = {"n": 0}

    def first_fails():  # type: ignore[no-untyped-def]
        calls["n"] += 1
        snap = real()
        return dataclasses.replace(snap, gpus=(), error="the server's GPU reading failed") if calls["n"] == 1 else snap

    server.snapshot = first_fails  # type: ignore[method-assign]
    app = make_app(server, interval=0.05)
    async with app.run_test(size=(200, 50)):
        await wait_for_refreshes(app, 3)
        await eventually(lambda: "No GPU can be read here" not in screen_text(app) and "GPU 0" in screen_text(app),
                         timeout=60, what="the no-GPU note stayed after the GPUs were read")
