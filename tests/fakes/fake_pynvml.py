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


@dataclass(frozen=True)
class Driver:
    """What the driver's library exports and how the Python binding reaches it.

    `lacks`: C entry points the driver does not have ("v3", "v2" process lists, "memory_v2",
    or any field name such as "mig_mode"); `binding`: "13" (nvidia-ml-py 13: the unversioned
    process call goes to _v3 and turns a missing symbol into NVMLLibraryMismatchError) or "11"
    (no _v3 names; the unversioned call goes to _v2); `garbled_v3`: _v3 answers in another
    struct layout, so pids come back out of range (nvitop #181, R525)."""

    lacks: frozenset[str] = frozenset()
    binding: str = "13"
    garbled_v3: bool = False


def make_fake_nvml(devices: list[FakeDevice], init_error: type[Exception] | None = None,
                   driver: Driver = Driver()) -> Any:
    m = types.SimpleNamespace()
    for name in dir(pynvml):
        if (name.startswith("NVMLError") or name.startswith("NVML_") or name == "nvmlMemory_v2"
                or name == "NVMLLibraryMismatchError"):
            setattr(m, name, getattr(pynvml, name))
    m.calls = 0

    def dev(h: Any) -> FakeDevice:
        return devices[h]

    def check(h: int, what: str) -> FakeDevice:
        m.calls += 1
        if what in driver.lacks:
            raise pynvml.NVMLError_FunctionNotFound()
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
        if version is not None and "memory_v2" in driver.lacks:
            raise pynvml.NVMLError_FunctionNotFound()
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
    def procs(version: str, kind: str) -> Any:
        def call(h: int) -> list[Any]:
            d = check(h, "processes")
            if version in driver.lacks:
                raise pynvml.NVMLError_FunctionNotFound()
            found = list(d.compute) if kind == "Compute" else []
            if version == "v3" and driver.garbled_v3:  # the v2 struct read as v3: fields shifted
                return [FakeProc(p.pid | (p.usedGpuMemory or 0) << 8, 0) for p in found]
            return found
        return call

    for kind in ("Compute", "Graphics"):
        base = f"nvmlDeviceGet{kind}RunningProcesses"
        setattr(m, f"{base}_v2", procs("v2", kind))
        if driver.binding == "13":
            v3 = procs("v3", kind)
            setattr(m, f"{base}_v3", v3)

            def unversioned(h: int, v3: Any = v3) -> list[Any]:  # pynvml's throwOnVersionMismatch
                try:
                    return v3(h)
                except pynvml.NVMLError_FunctionNotFound:
                    raise pynvml.NVMLLibraryMismatchError("Unversioned function called and the pyNVML version "
                                                          "does not match the NVML lib version") from None
            setattr(m, base, unversioned)
        else:
            setattr(m, base, procs("v2", kind))
    m.device = dev
    return m
