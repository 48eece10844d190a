"""Immutable pictures of the server, taken once per refresh and only read afterwards.

A backend (NVML or simulated) builds one ServerSnapshot per tick on a background thread; the
dashboard, `gputui status` and the scheduler's preflight read the latest one. Fields that the
hardware would not tell are None ("N/A" on screen), never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from gputui.core.memory import first_matmul_would_fail, headroom_bytes

# Bumped only when a field is removed or changes meaning; adding fields keeps the version.
STATUS_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class GpuProcess:
    """One process holding memory (or a context) on one GPU."""

    pid: int
    used_bytes: int | None
    kind: str = "compute"  # "compute" holds a CUDA context; "graphics" a graphics one
    user: str | None = None
    command: str | None = None
    ours: bool = False  # one of this gputui's model workers
    model: str | None = None  # which model, when ours


@dataclass(frozen=True)
class GpuSnapshot:
    """One GPU at one moment."""

    index: int  # NVML index, as nvidia-smi numbers GPUs
    uuid: str
    pci_bus_id: str
    name: str
    total_bytes: int | None = None
    used_bytes: int | None = None
    free_bytes: int | None = None
    util_percent: int | None = None
    mem_util_percent: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    compute_mode: str | None = None
    mig_enabled: bool | None = None
    persistence: bool | None = None
    compute_capability: tuple[int, int] | None = None
    multiprocessors: int | None = None
    processes: tuple[GpuProcess, ...] = ()
    # Set when this GPU could not be read at all (lost, no permission); the others go on.
    error: str | None = None
    # Fields the driver refused (NotSupported / NoPermission), shown as N/A with a hint.
    unavailable: tuple[str, ...] = ()
    # CUDA's numbering of this GPU for a process started now, or None when hidden from it.
    cuda_index_pci: int | None = None
    cuda_index_default: int | None = None
    host: str | None = None  # the machine it is in, when a cluster spans several (None: this one)

    @property
    def headroom_bytes(self) -> int | None:
        return headroom_bytes(self.free_bytes)

    @property
    def first_matmul_would_fail(self) -> bool:
        return self.error is None and first_matmul_would_fail(self.free_bytes)

    @property
    def context_holders(self) -> tuple[GpuProcess, ...]:
        return tuple(p for p in self.processes if p.kind == "compute")


@dataclass(frozen=True)
class ServerSnapshot:
    """Every GPU of the machine at one moment, and how the picture was taken."""

    taken_at: float
    backend: str  # "nvml" or "simulated"
    gpus: tuple[GpuSnapshot, ...] = ()
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    error: str | None = None  # the backend as a whole failed (NVML gone): nothing to show
    # the error is a reading that did not come in time (a server still starting, a loaded
    # machine): the next one may work, so the screen waits rather than saying there is no GPU
    transient: bool = False

    @property
    def simulated(self) -> bool:
        return self.backend == "simulated"

    def gpu(self, key: str | int) -> GpuSnapshot | None:
        """Find a GPU by NVML index, UUID or PCI bus id (case-insensitive, short bus ids ok)."""
        for g in self.gpus:
            if gpu_matches(g, key):
                return g
        return None


def normalise_bus_id(bus_id: str) -> str:
    """NVML prints 00000000:3B:00.0, nvidia-smi 00000000:3B:00.0, lspci 3b:00.0: one form."""
    b = bus_id.strip().lower()
    if b.count(":") == 1:
        b = "00000000:" + b
    domain, _, rest = b.partition(":")
    return f"{int(domain, 16):08x}:{rest}"


def gpu_matches(gpu: GpuSnapshot, key: str | int) -> bool:
    if isinstance(key, int):
        return gpu.index == key
    k = key.strip()
    if k.isdigit():
        return gpu.index == int(k)
    if k.lower().startswith("gpu-"):
        return gpu.uuid.lower() == k.lower()
    try:
        return normalise_bus_id(gpu.pci_bus_id) == normalise_bus_id(k)
    except ValueError:
        return False


def mark_ours(snapshot: ServerSnapshot, worker_pids: dict[int, str]) -> ServerSnapshot:
    """Mark the processes that are our model workers (pid -> model name)."""
    if not worker_pids:
        return snapshot
    gpus = []
    for g in snapshot.gpus:
        procs = tuple(
            replace(p, ours=True, model=worker_pids[p.pid]) if p.pid in worker_pids else p
            for p in g.processes
        )
        gpus.append(replace(g, processes=procs))
    return replace(snapshot, gpus=tuple(gpus))


def snapshot_to_json(snapshot: ServerSnapshot) -> dict[str, Any]:
    """The `gputui status --json` document; its schema is described in README.md."""
    return {
        "schema_version": STATUS_SCHEMA_VERSION,
        "backend": snapshot.backend,
        "simulated": snapshot.simulated,
        "taken_at": snapshot.taken_at,
        "driver_version": snapshot.driver_version,
        "cuda_driver_version": snapshot.cuda_driver_version,
        "error": snapshot.error,
        "gpus": [_gpu_json(g) for g in snapshot.gpus],
    }


def _gpu_json(g: GpuSnapshot) -> dict[str, Any]:
    return {
        "index": g.index,
        "host": g.host,
        "cuda_index": g.cuda_index_pci,
        "cuda_index_default_order": g.cuda_index_default,
        "uuid": g.uuid,
        "pci_bus_id": g.pci_bus_id,
        "name": g.name,
        "memory": {
            "total_bytes": g.total_bytes,
            "used_bytes": g.used_bytes,
            "free_bytes": g.free_bytes,
            "headroom_bytes": g.headroom_bytes,
            "first_matmul_would_fail": g.first_matmul_would_fail,
        },
        "utilization_percent": g.util_percent,
        "memory_utilization_percent": g.mem_util_percent,
        "temperature_c": g.temperature_c,
        "power_w": g.power_w,
        "power_limit_w": g.power_limit_w,
        "compute_mode": g.compute_mode,
        "mig_enabled": g.mig_enabled,
        "persistence": g.persistence,
        "error": g.error,
        "unavailable": list(g.unavailable),
        "processes": [
            {
                "pid": p.pid,
                "kind": p.kind,
                "used_bytes": p.used_bytes,
                "user": p.user,
                "command": p.command,
                "ours": p.ours,
                "model": p.model,
            }
            for p in g.processes
        ],
    }


def snapshot_from_json(d: dict[str, Any]) -> ServerSnapshot:
    """The inverse of snapshot_to_json (a snapshot that crossed the server's socket)."""
    gpus = []
    for g in d.get("gpus", []):
        mem = g.get("memory") or {}
        procs = tuple(GpuProcess(int(p["pid"]), p.get("used_bytes"), p.get("kind", "compute"), p.get("user"),
                                 p.get("command"), bool(p.get("ours")), p.get("model")) for p in g.get("processes", []))
        gpus.append(GpuSnapshot(
            index=int(g["index"]), uuid=str(g["uuid"]), pci_bus_id=str(g["pci_bus_id"]), name=str(g["name"]),
            total_bytes=mem.get("total_bytes"), used_bytes=mem.get("used_bytes"), free_bytes=mem.get("free_bytes"),
            util_percent=g.get("utilization_percent"), mem_util_percent=g.get("memory_utilization_percent"),
            temperature_c=g.get("temperature_c"), power_w=g.get("power_w"), power_limit_w=g.get("power_limit_w"),
            compute_mode=g.get("compute_mode"), mig_enabled=g.get("mig_enabled"), persistence=g.get("persistence"),
            processes=procs, error=g.get("error"), unavailable=tuple(g.get("unavailable") or ()),
            cuda_index_pci=g.get("cuda_index"), cuda_index_default=g.get("cuda_index_default_order"),
            host=g.get("host")))
    return ServerSnapshot(float(d.get("taken_at") or 0.0), str(d.get("backend") or "nvml"), tuple(gpus),
                          d.get("driver_version"), d.get("cuda_driver_version"), d.get("error"))
