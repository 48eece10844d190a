"""What screens and the command palette may reach of the app, typed: its controller (the one
way to the models) and the last snapshot. Screens cannot import the app (it imports them); they
cast `self.app` to this instead of reaching it through Any."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from gputui.core.snapshot import ServerSnapshot
from gputui.tui.controller import ModelController
from gputui.tui.profile_actions import ProfileActions

if TYPE_CHECKING:
    from gputui.tui.screens.dashboard import DashboardScreen


class DashboardHost(Protocol):
    controller: ModelController
    snapshot: ServerSnapshot | None
    dashboard: DashboardScreen
    profiles: ProfileActions
