"""Run the dashboard in the user's terminal (the CLI composes what it shows)."""

from __future__ import annotations

from gputui.api.client import Client
from gputui.hardware.base import GpuTelemetry
from gputui.tui.app import make_app


def run_dashboard(telemetry: GpuTelemetry, *, interval: float, client: Client | None, lock_note: str | None,
                  startup_profile: str | None, theme: str | None = None) -> None:
    """`client`: the models to manage, or None when this instance only monitors (`lock_note`
    says why: no GPU can be read)."""
    _guard_pastes()
    app = make_app(telemetry, interval=interval, client=client, lock_note=lock_note,
                   startup_profile=startup_profile if client else None, handle_signals=True, theme=theme)
    app.run()


async def run_dashboard_async(telemetry: GpuTelemetry, *, interval: float, client: Client,
                              startup_profile: str | None, server_note: str | None, theme: str | None = None) -> None:
    """The dashboard attached to a server's client, on the caller's event loop (the client's
    connection lives there). Quitting leaves the models serving unless the user says otherwise."""
    _guard_pastes()
    app = make_app(telemetry, interval=interval, client=client, startup_profile=startup_profile,
                   handle_signals=True, attached=True, lock_note=server_note, theme=theme)
    await app.run_async()


def _guard_pastes() -> None:
    """A paste with an ESC in it stays one paste (see tui/paste.py); where this Textual cannot
    be guarded, the dashboard says so once (its notes) and goes on with Textual's own."""
    from gputui.paths import note
    from gputui.tui import paste

    missing = paste.install()
    if missing:
        note(missing)
