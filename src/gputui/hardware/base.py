"""The interface every GPU reader implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from gputui.core.snapshot import ServerSnapshot


class TelemetryUnavailable(RuntimeError):
    """No GPU reader can start here (no driver, no NVML); the message is one line for users."""


@runtime_checkable
class GpuTelemetry(Protocol):
    """Takes a picture of every GPU. Must be cheap: it runs twice a second or more."""

    backend: str

    def snapshot(self) -> ServerSnapshot: ...

    def close(self) -> None: ...
