"""Real workers on the CPU whose memory is booked on the simulated server's GPUs, so `--demo`
and the tests see loads on the dashboard exactly as NVML would show them."""

from __future__ import annotations

import os
from typing import Any

from gputui.hardware.simulated import SimulatedServer
from gputui.scheduler.launcher import LocalLauncher
from gputui.scheduler.worker_handle import WorkerHandle


class SimulatedLauncher(LocalLauncher):
    """LocalLauncher on the CPU, booking each placed worker on the simulated GPUs."""

    def __init__(self, server: SimulatedServer, **kwargs: Any) -> None:
        kwargs.setdefault("device", "cpu")
        super().__init__(**kwargs)
        self.server = server

    def placed(self, handle: WorkerHandle, gpu_uuid: str, n_bytes: int) -> None:
        self.server.allocate(gpu_uuid, handle.pid, n_bytes, os.environ.get("USER", "you"),
                             f"python -m gputui.worker (pid {handle.pid})")

    def ended(self, handle: WorkerHandle) -> None:
        self.server.release(handle.pid)
