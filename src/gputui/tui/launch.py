"""Start the dashboard for the CLI."""

from __future__ import annotations

from gputui.hardware.base import GpuTelemetry
from gputui.tui.app import make_app


def run_dashboard(telemetry: GpuTelemetry, *, interval: float, demo: bool, apply_demo_profile: bool) -> None:
    app = make_app(telemetry, interval=interval)
    app.run()
    telemetry.close()
