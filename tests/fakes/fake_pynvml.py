"""A stand-in for the pynvml module that raises the real NVML exception types.

Each fake device holds plain values; `fail[field] = ExceptionClass` makes that one call raise,
the way a real driver does for NotSupported, NoPermission or a GPU that fell off the bus.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

import pynvml  # noqa: TID251 - the fake borrows the real exception classes

MiB = 1 << 20


@dataclass
class FakeProc:
    pid: int
    usedGpuMemory: int | None  # noqa: N815 - NVML's own field name


@dataclass
class FakeDevice:
    uuid: str
    bus_id: str
    name: str = "NVIDIA H100 80GB HBM3"
    total: int = 81559 * MiB
    used: int = 0
    reserved_v1: int = 480 * MiB  # what the v1 struct wrongly counts as used on an idle H100
    util: int = 0
    temp: int = 30
    power_mw: int = 70_000
    compute: list[FakeProc] = field(default_factory=list)
    fail: dict[str, type[Exception]] = field(default_factory=dict)


class _Mem:
    def __init__(self, total: int, used: int) -> None:
        self.total, self.used, self.free = total, used, total - used


class _Util:
    def __init__(self, gpu: int) -> None:
        self.gpu, self.memory = gpu, gpu // 2


def make_fake_nvml(devices: list[FakeDevice], init_error: type[Exception] | None = None) -> Any:
    m = types.SimpleNamespace()
    for name in dir(pynvml):
        if name.startswith("NVMLError") or name.startswith("NVML_") or name == "nvmlMemory_v2":
            setattr(m, name, getattr(pynvml, name))
    m.calls = 0

    def dev(h: Any) -> FakeDevice:
        return devices[h]

    def check(h: int, what: str) -> FakeDevice:
        m.calls += 1
        d = devices[h]
        if what in d.fail:
            raise d.fail[what]()
        if "all" in d.fail:
            raise d.fail["all"]()
        return d

    def init() -> None:
        if init_error is not None:
            raise init_error()

    m.nvmlInit = init
    m.nvmlShutdown = lambda: None
    m.nvmlSystemGetDriverVersion = lambda: "580.159.04"
    m.nvmlSystemGetCudaDriverVersion = lambda: 13000
    m.nvmlDeviceGetCount = lambda: len(devices)
    m.nvmlDeviceGetHandleByIndex = lambda i: check(i, "handle") and i
    m.nvmlDeviceGetUUID = lambda h: check(h, "uuid").uuid
    m.nvmlDeviceGetName = lambda h: check(h, "name").name
    m.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=check(h, "pci").bus_id)
    m.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)

    def memory(h: int, version: Any = None) -> _Mem:
        d = check(h, "memory")
        if version is None:
            return _Mem(d.total, d.used + d.reserved_v1)
        return _Mem(d.total, d.used)

    m.nvmlDeviceGetMemoryInfo = memory
    m.nvmlDeviceGetUtilizationRates = lambda h: _Util(check(h, "utilization").util)
    m.nvmlDeviceGetTemperature = lambda h, sensor: check(h, "temperature").temp
    m.nvmlDeviceGetPowerUsage = lambda h: check(h, "power").power_mw
    m.nvmlDeviceGetEnforcedPowerLimit = lambda h: check(h, "power_limit") and 700_000
    m.nvmlDeviceGetComputeMode = lambda h: check(h, "compute_mode") and 0
    m.nvmlDeviceGetMigMode = lambda h: check(h, "mig_mode") and (0, 0)
    m.nvmlDeviceGetPersistenceMode = lambda h: check(h, "persistence") and 1
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: list(check(h, "processes").compute)
    m.nvmlDeviceGetGraphicsRunningProcesses = lambda h: check(h, "processes") and []
    m.device = dev
    return m
