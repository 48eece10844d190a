"""A reader for a machine whose NVML could not start (no driver, broken install).

The dashboard still opens on it, so past conversations, profiles and the doctor stay at hand:
every picture is empty and carries the reason, and GPU actions are off.
"""

from __future__ import annotations

import time

from gputui.core.snapshot import ServerSnapshot


class UnavailableTelemetry:
    backend = "nvml"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def snapshot(self) -> ServerSnapshot:
        return ServerSnapshot(time.time(), self.backend, error=self.reason)

    def close(self) -> None:
        pass
