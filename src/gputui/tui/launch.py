"""Start the dashboard for the CLI: scheduler (if this user holds the lock), demo profile."""

from __future__ import annotations

from gputui.hardware.base import GpuTelemetry
from gputui.tui.app import make_app


def run_dashboard(telemetry: GpuTelemetry, *, interval: float, demo: bool, apply_demo_profile: bool,
                  profile: str | None = None, gpu_actions_off: str | None = None) -> None:
    """`gpu_actions_off`: why no model can be scheduled here (e.g. NVML is missing); the
    dashboard then only shows and explains."""
    from gputui.scheduler.factory import make_scheduler
    from gputui.scheduler.lock import SchedulerLocked, UserLock

    lock = UserLock()
    scheduler = None
    note = f"GPU actions are off: {gpu_actions_off}" if gpu_actions_off else None
    try:
        if gpu_actions_off is None:
            lock.acquire()
            scheduler = make_scheduler(telemetry, spare=not demo)
    except SchedulerLocked as e:
        note = str(e)
    from gputui.tui import paste

    paste.install()  # a paste with an ESC in it stays one paste (see tui/paste.py)
    app = make_app(telemetry, interval=interval, scheduler=scheduler, lock_note=note,
                   startup_profile=(profile or ("demo" if demo and apply_demo_profile else None)) if scheduler else None,
                   handle_signals=True)
    try:
        app.run()
    finally:
        lock.release()
        telemetry.close()
