"""A made-up GPU server for tests and `gputui --demo`. Everything it shows is SIMULATED.

It is a small mutable world: GPUs with capacities, foreign processes that hold memory, and
allocations that our (simulated-placement) workers make into it, so a model loaded in the
demo shows on the dashboard exactly as it would over NVML. Faults are switches on it:
`lose(i)` for a GPU that fell off the bus, `deny(i, field)` for NoPermission / NotSupported.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gputui.core import env
from gputui.core.cuda_order import with_cuda_indices
from gputui.core.snapshot import GpuProcess, GpuSnapshot, ServerSnapshot
from gputui.core.units import MiB

H100_TOTAL_BYTES = 81559 * MiB  # what nvidia-smi reports for an H100 80GB HBM3


@dataclass
class SimGpu:
    name: str
    uuid: str
    pci_bus_id: str
    total_bytes: int
    compute_capability: tuple[int, int] = (9, 0)
    multiprocessors: int = 132
    lost: bool = False
    unavailable: set[str] = field(default_factory=set)
    phase: float = 0.0


@dataclass
class SimProcess:
    pid: int
    gpu_uuid: str
    used_bytes: int
    user: str
    command: str
    kind: str = "compute"


class SimulatedServer:
    """Implements GpuTelemetry over an in-memory server."""

    backend = "simulated"

    def __init__(self, gpus: list[SimGpu], driver_version: str = "580.00 (simulated)",
                 clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self.gpus = gpus
        self.processes: dict[tuple[int, str], SimProcess] = {}
        self.driver_version = driver_version
        self.environ: dict[str, str] = {}
        self.clock = clock  # tests pass a fixed clock for pictures that never change

    # -- the world --------------------------------------------------------------------

    def gpu_by_uuid(self, uuid: str) -> SimGpu:
        for g in self.gpus:
            if g.uuid == uuid:
                return g
        raise KeyError(uuid)

    def free_bytes(self, uuid: str) -> int:
        with self._lock:
            g = self.gpu_by_uuid(uuid)
            return g.total_bytes - self._used(uuid)

    def _used(self, uuid: str) -> int:
        return sum(p.used_bytes for p in self.processes.values() if p.gpu_uuid == uuid)

    def allocate(
        self, uuid: str, pid: int, n_bytes: int, user: str = "you", command: str = "python"
    ) -> None:
        """A process takes `n_bytes` more on a GPU; raises MemoryError past the capacity."""
        with self._lock:
            g = self.gpu_by_uuid(uuid)
            if self._used(uuid) + n_bytes > g.total_bytes:
                raise MemoryError(f"simulated OOM on {uuid}")
            key = (pid, uuid)
            if key in self.processes:
                self.processes[key].used_bytes += n_bytes
            else:
                self.processes[key] = SimProcess(pid, uuid, n_bytes, user, command)

    def release(self, pid: int) -> None:
        """A process ended: the driver gives all its memory back."""
        with self._lock:
            for key in [k for k in self.processes if k[0] == pid]:
                del self.processes[key]

    def lose(self, index: int) -> None:
        self.gpus[index].lost = True

    # -- GpuTelemetry -----------------------------------------------------------------

    def snapshot(self) -> ServerSnapshot:
        with self._lock:
            now = self.clock()
            gpus = [self._gpu_snapshot(i, g, now) for i, g in enumerate(self.gpus)]
        return ServerSnapshot(
            taken_at=now,
            backend=self.backend,
            gpus=tuple(with_cuda_indices(gpus, self.environ)),
            driver_version=self.driver_version,
            cuda_driver_version="13.0",
        )

    def _gpu_snapshot(self, index: int, g: SimGpu, now: float) -> GpuSnapshot:
        if g.lost:
            return GpuSnapshot(
                index, g.uuid, g.pci_bus_id, g.name,
                error="GPU is lost (fell off the bus); a reboot or reset by the admin brings it back",
            )
        procs = tuple(
            GpuProcess(p.pid, p.used_bytes, p.kind, p.user, p.command)
            for p in sorted(self.processes.values(), key=lambda p: -p.used_bytes)
            if p.gpu_uuid == g.uuid
        )
        used = sum(p.used_bytes for p in procs if p.used_bytes)
        busy = bool(procs)
        # A gentle wave so the demo's sparklines move; tests never assert on it.
        util = int(35 + 30 * math.sin(now / 7 + index)) if busy else 0

        def maybe(name: str, value: object) -> object:
            return None if name in g.unavailable else value

        return GpuSnapshot(
            index=index,
            uuid=g.uuid,
            pci_bus_id=g.pci_bus_id,
            name=g.name,
            total_bytes=g.total_bytes,
            used_bytes=used,
            free_bytes=g.total_bytes - used,
            util_percent=maybe("utilization", util),  # type: ignore[arg-type]
            mem_util_percent=maybe("utilization", util // 2),  # type: ignore[arg-type]
            temperature_c=maybe("temperature", 31 + util // 4),  # type: ignore[arg-type]
            power_w=maybe("power", 70.0 + 4.5 * util),  # type: ignore[arg-type]
            power_limit_w=maybe("power_limit", 700.0),  # type: ignore[arg-type]
            compute_mode="Default",
            mig_enabled=False,
            persistence=True,
            compute_capability=g.compute_capability,
            multiprocessors=g.multiprocessors,
            processes=procs,
            unavailable=tuple(sorted(g.unavailable)),
        )

    def close(self) -> None:
        pass


def make_gpus(count: int, total_bytes: int = H100_TOTAL_BYTES, machine: int = 0) -> list[SimGpu]:
    """`machine` (0-255) makes the UUIDs of one simulated host differ from another's."""
    return [
        SimGpu(
            name="NVIDIA H100 80GB HBM3",
            uuid=f"GPU-5e1a{machine:02x}00-0000-4000-8000-0000000000{i:02d}",
            pci_bus_id=f"00000000:{0x18 + 0x10 * i:02X}:00.0",
            total_bytes=total_bytes,
        )
        for i in range(count)
    ]


def demo_gpu_count() -> int:
    """How many simulated GPUs (GPUTUI_DEMO_GPUS, 1-16; default 2), to try layouts."""
    raw = env.get("GPUTUI_DEMO_GPUS") or "2"
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= 16 else 2


def demo_server(clock: Callable[[], float] = time.time) -> SimulatedServer:
    """Two 80 GB GPUs (GPUTUI_DEMO_GPUS for more); another user trains on GPU 1, so `auto`
    placement prefers GPU 0."""
    server = SimulatedServer(make_gpus(demo_gpu_count()), clock=clock)
    server.allocate(server.gpus[1].uuid, 4242, 30 * 1024 * MiB, "alice", "python train.py --bs 64")
    return server
