"""What screens, widgets and the app's own workers tell the app. Screens never call the app's
methods: they post one of these, it bubbles up to GpuTuiApp, and its handler acts - so a screen
needs no knowledge of the app's type, and a test drives the app the way its screens do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.message import Message

from gputui.api.views import Event
from gputui.core.snapshot import ServerSnapshot


class SnapshotTaken(Message):
    """The poll thread's newest picture of the GPUs (posted from that thread)."""

    def __init__(self, snapshot: ServerSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class SchedulerEvent(Message):
    """One event of the client's numbered stream: a model's change, a timeline record, a reset."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class OpenChat(Message):
    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model


class ReopenChat(Message):
    """Continue a past conversation (its journal) with its model."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path


class SwitchChat(Message):
    """The chat screen's next ready model, after `current`."""

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current


class SplitChat(Message):
    """A second pane beside the chat screen's first (`screen`: that ChatScreen)."""

    def __init__(self, screen: Any) -> None:
        super().__init__()
        self.screen = screen


class ApplyProfile(Message):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class SaveProfile(Message):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class ShowDoctor(Message):
    pass
