"""The GPU picture, taken on a thread: NVML calls can block for a long time on a sick GPU, and
the keys must never wait behind one. Each picture is posted to the app (SnapshotTaken) with our
workers' pids marked, so the user's own models are never shown as another user's."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from textual.message import Message

from gputui.api.client import Client
from gputui.core.snapshot import ServerSnapshot, mark_ours
from gputui.hardware.base import GpuTelemetry
from gputui.tui.messages import SnapshotTaken


class SnapshotPoller:
    def __init__(self, telemetry: GpuTelemetry, client: Client | None, interval: float) -> None:
        self.telemetry, self.client, self.interval = telemetry, client, interval
        self._wake = threading.Event()

    def take(self) -> ServerSnapshot:
        try:
            snap = self.telemetry.snapshot()
        except Exception as e:  # a reader bug must not take the dashboard down
            snap = ServerSnapshot(time.time(), self.telemetry.backend, error=f"{type(e).__name__}: {e}")
        pids = dict(self.client.worker_pids()) if self.client is not None else {}  # an immutable snapshot
        return mark_ours(snap, pids)

    def run(self, post: Callable[[Message], object], cancelled: Callable[[], bool]) -> None:
        """Take a picture every `interval` seconds until cancelled (on the poll thread: it never
        touches a widget; post_message is safe from any thread)."""
        while not cancelled():
            started = time.monotonic()
            snap = self.take()
            if cancelled():
                return
            post(SnapshotTaken(snap))
            self._wake.wait(max(0.0, self.interval - (time.monotonic() - started)))
            self._wake.clear()

    def stale_note(self, applied_at: float) -> str | None:
        """Stale = no new picture for three refresh intervals (on our own monotonic clock, so a
        reader with another idea of the time of day is not called stale)."""
        age = time.monotonic() - applied_at
        if age > max(3 * self.interval, 2.0):
            return f"⚠ GPU data is stale ({age:.0f}s old): the GPU reader is not answering"
        return None

    def wake(self) -> None:
        """Poll now instead of at the next tick (r; and at exit, so the thread leaves its wait)."""
        self._wake.set()
