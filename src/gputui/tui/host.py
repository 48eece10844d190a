"""What screens and the command palette may reach of the app, typed: its controller (the one
way to the models) and the last snapshot. Screens cannot import the app (it imports them); they
cast `self.app` to this instead of reaching it through Any."""

from __future__ import annotations

from typing import Protocol

from gputui.core.snapshot import GpuProcess, ServerSnapshot
from gputui.tui.controller import ModelController
from gputui.tui.profile_actions import ProfileActions


class DashboardActions(Protocol):
    """The dashboard screen's actions the command palette offers (the screen imports this module,
    so it is named by what it does, not imported)."""

    def action_load(self) -> None: ...

    def action_doctor(self) -> None: ...

    def action_save_profile(self) -> None: ...

    def confirm_end_process(self, pid: int, proc: GpuProcess) -> None: ...


class DashboardHost(Protocol):
    controller: ModelController
    snapshot: ServerSnapshot | None
    dashboard: DashboardActions
    profiles: ProfileActions
