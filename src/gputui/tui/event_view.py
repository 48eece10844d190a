"""Where the client's events show: model changes and resets in every models panel, timeline
records in their event logs, and the few that need the user's eye as toasts."""

from __future__ import annotations

from textual.app import App
from textual.notifications import SeverityLevel
from textual.screen import Screen

from gputui.api.views import Event, ModelView
from gputui.tui.widgets.models_panel import ModelsPanel


def show_event(app: App[None], dashboard: Screen[None], ev: Event, started_at: float) -> None:
    panels = list(dashboard.query(ModelsPanel))
    if ev.type == "model":
        for panel in panels:
            panel.show_model(ev.view())
    elif ev.type == "reset":
        views = [ModelView.from_json(data) for data in ev.data.get("models", [])]
        for panel in panels:
            panel.show_only(views)
    elif ev.type == "timeline":
        for panel in panels:
            panel.log_event(ev.data)
        _toast(app, ev, started_at)


def _toast(app: App[None], ev: Event, started_at: float) -> None:
    what = ev.data.get("event")
    if what == "server_gone":
        app.notify(f"{ev.data.get('message')}", severity="warning", timeout=None)
    elif what == "reconnected":
        app.notify(f"attached again to your gputui server (pid {ev.data.get('pid')})")
    elif what == "profile_step" and ev.t >= started_at:  # live, not the log's replay
        outcome = ev.data.get("outcome")
        severity: SeverityLevel = "error" if outcome == "failed" else \
            "warning" if outcome in ("kept", "skipped") else "information"
        app.notify(f"{ev.model}: {ev.data.get('message')}", severity=severity,
                   timeout=None if severity == "information" else 12)
