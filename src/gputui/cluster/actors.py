"""What runs inside Ray's processes: a model's worker host, and one probe per node.

Plain classes; the launcher and the telemetry wrap them with ray.remote where they start them.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any


class WorkerHost:
    """One gputui worker inside a Ray actor: the worker's own code and fixed load order, fed
    through calls (send) and drained through calls (take) instead of stdin and stdout. When the
    worker ends (shutdown, a fatal error) the actor's process ends with it."""

    def __init__(self, env: dict[str, str], preload: list[str]) -> None:
        # Ray may have set CUDA_VISIBLE_DEVICES for this process; the worker pins its GPUs by UUID
        # itself at load, before CUDA starts (see gputui.worker.warmup). Ray's choice is kept for
        # the record only: we ask Ray for no GPU, so nothing here depends on it.
        self.ray_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ.update(env)
        from gputui.worker.channel import QueueChannel
        from gputui.worker.main import Worker

        self.worker = Worker(QueueChannel)
        threading.Thread(target=self._run, args=(preload,), name="gputui-worker", daemon=True).start()

    def _run(self, preload: list[str]) -> None:
        code = self.worker.run(preload)
        if code:
            os._exit(code)
        # a shutdown: the launcher ends the actor (Ray logs a process that exits by itself as a crash)

    def where(self) -> dict[str, Any]:
        import ray

        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "host": socket.gethostname(), "ray_cuda_visible_devices": self.ray_visible}

    def send(self, lines: list[bytes]) -> None:
        for line in lines:
            self.worker.channel.feed(line)

    def take(self, timeout: float) -> list[bytes]:
        return self.worker.channel.take(timeout)  # type: ignore[attr-defined, no-any-return]


class NodeProbe:
    """A node's GPUs, read by NVML on that node (or simulated: `simulated` GPUs, for tests and
    --demo). Never imports torch, never creates a CUDA context."""

    def __init__(self, simulated: int = 0, machine: int = 0) -> None:
        if simulated:
            from gputui.hardware.simulated import SimulatedServer, make_gpus

            self.telemetry: Any = SimulatedServer(make_gpus(simulated, machine=machine))
        else:
            from gputui.hardware.nvml import NvmlTelemetry

            self.telemetry = NvmlTelemetry()

    def snapshot(self) -> dict[str, Any]:
        from gputui.core.snapshot import snapshot_to_json

        return snapshot_to_json(self.telemetry.snapshot())

    def costs(self, kind: str, path: str, dtype: str, context: int | None,
              gpus: list[str], slots: int | None = None) -> tuple[str, Any]:
        """The preflight read on this node, where the path is valid: ("ok", (estimate, split)) or
        ("refused", the checkpoint's one-line error). Reads headers only; no torch."""
        from pathlib import Path

        from gputui.core.checkpoint_info import CheckpointError
        from gputui.core.kinds import kind_named, preflight_costs

        try:
            return "ok", preflight_costs(kind_named(kind), Path(path), dtype, context, gpus, slots)
        except CheckpointError as e:
            return "refused", str(e)

    def hostname(self) -> str:
        return socket.gethostname()

    # what a simulated node's workers book, as a real GPU would by itself
    def allocate(self, uuid: str, pid: int, n_bytes: int, user: str, command: str) -> None:
        self.telemetry.allocate(uuid, pid, n_bytes, user, command)

    def release(self, pid: int) -> None:
        self.telemetry.release(pid)
