"""The real GPU reader, through NVML. The only module of gputui that imports pynvml.

Every NVML call goes through `read`, which turns NotSupported / NoPermission, and an entry point
this driver and binding do not share (nvml_versions.py), into "not available" (None plus the
field's name in `unavailable`) and lets GPU-wide failures (GPU lost, unknown error) mark just
that GPU. A failure of any type never escapes `snapshot()`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from gputui.core.cuda_order import GpuIdentity, with_cuda_indices
from gputui.core.snapshot import GpuProcess, GpuSnapshot, ServerSnapshot
from gputui.hardware.base import TelemetryUnavailable
from gputui.hardware.nvml_versions import BindingGap, binding_gaps, process_calls
from gputui.hardware.procinfo import ProcessInfoCache

T = TypeVar("T")

_COMPUTE_MODES = {0: "Default", 1: "Exclusive Thread", 2: "Prohibited", 3: "Exclusive Process"}


def _load_pynvml() -> ModuleType:
    import pynvml  # noqa: TID251 - this module is the one allowed importer

    return pynvml


class _FieldUnavailable(Exception):
    pass


class NvmlTelemetry:
    """Reads every GPU through NVML. `nvml` may be a fake module in tests."""

    backend = "nvml"

    def __init__(self, nvml: ModuleType | None = None) -> None:
        try:
            self._nvml = nvml if nvml is not None else _load_pynvml()
        except ImportError as e:
            raise TelemetryUnavailable(
                f"pynvml is not installed ({e}); install nvidia-ml-py, or try `gputui --demo`"
            ) from e
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as e:
            raise TelemetryUnavailable(
                f"no NVIDIA driver found (NVML: {e}); to look around without a GPU, run `gputui --demo`"
            ) from e
        self._lock = threading.Lock()
        self._identity: dict[int, GpuIdentity] = {}
        self._names: dict[int, str] = {}
        self._procs = ProcessInfoCache()
        self._gaps = binding_gaps(self._nvml)
        self._process_calls = process_calls(self._nvml)
        self.driver_version = self._global(self._nvml.nvmlSystemGetDriverVersion)
        cuda = self._global(self._nvml.nvmlSystemGetCudaDriverVersion)
        self.cuda_driver_version = f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None

    def _global(self, fn: Callable[[], Any]) -> Any:
        try:
            value = fn()
        except self._nvml.NVMLError:
            return None
        return value.decode() if isinstance(value, bytes) else value

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass

    # -- one refresh ---------------------------------------------------------------------

    def snapshot(self) -> ServerSnapshot:
        with self._lock:
            taken = time.time()
            try:
                count = self._nvml.nvmlDeviceGetCount()
            except Exception as e:  # noqa: BLE001 - an NVMLError or a binding's own; never past here
                return ServerSnapshot(taken, self.backend, error=f"NVML: {e}")
            gpus = [self._gpu(i) for i in range(count)]
            seen = {p.pid for g in gpus for p in g.processes}
            self._procs.keep_only(seen)
            return ServerSnapshot(
                taken_at=taken,
                backend=self.backend,
                gpus=tuple(with_cuda_indices(gpus, os.environ)),
                driver_version=self.driver_version,
                cuda_driver_version=self.cuda_driver_version,
            )

    def _gpu(self, index: int) -> GpuSnapshot:
        nv = self._nvml
        unavailable: list[str] = []

        def read(name: str, fn: Callable[[], T]) -> T | None:
            try:
                return fn()
            except (nv.NVMLError_NotSupported, nv.NVMLError_NoPermission, BindingGap, *self._gaps):
                unavailable.append(name)
                return None

        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            ident = self._identity.get(index) or self._read_identity(index, handle)
            mem = self._memory(handle)
            util = read("utilization", lambda: nv.nvmlDeviceGetUtilizationRates(handle))
            temp = read("temperature", lambda: nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU))
            power = read("power", lambda: nv.nvmlDeviceGetPowerUsage(handle))
            limit = read("power_limit", lambda: nv.nvmlDeviceGetEnforcedPowerLimit(handle))
            mode = read("compute_mode", lambda: nv.nvmlDeviceGetComputeMode(handle))
            mig = read("mig_mode", lambda: nv.nvmlDeviceGetMigMode(handle))
            persist = read("persistence", lambda: nv.nvmlDeviceGetPersistenceMode(handle))
            procs = self._processes(handle, read)
        except Exception as e:  # noqa: BLE001 - GPU-wide: lost, no permission, or a binding's own error
            known = self._identity.get(index)
            return GpuSnapshot(
                index=index,
                uuid=known.uuid if known else f"unknown-{index}",
                pci_bus_id=known.pci_bus_id if known else "",
                name=self._names.get(index, "unreadable GPU"),
                error=_gpu_error_text(nv, e),
            )
        return GpuSnapshot(
            index=index,
            uuid=ident.uuid,
            pci_bus_id=ident.pci_bus_id,
            name=self._names[index],
            total_bytes=mem[0] if mem else None,
            used_bytes=mem[1] if mem else None,
            free_bytes=mem[2] if mem else None,
            util_percent=util.gpu if util is not None else None,
            mem_util_percent=util.memory if util is not None else None,
            temperature_c=temp,
            power_w=power / 1000 if power is not None else None,
            power_limit_w=limit / 1000 if limit is not None else None,
            compute_mode=_COMPUTE_MODES.get(mode, str(mode)) if mode is not None else None,
            mig_enabled=bool(mig[0]) if mig is not None else None,
            persistence=bool(persist) if persist is not None else None,
            compute_capability=ident.compute_capability,
            multiprocessors=ident.multiprocessors,
            processes=procs,
            unavailable=tuple(unavailable) + (() if mem else ("memory",)),
        )

    def _read_identity(self, index: int, handle: Any) -> GpuIdentity:
        nv = self._nvml
        uuid = _text(nv.nvmlDeviceGetUUID(handle))
        bus = _text(nv.nvmlDeviceGetPciInfo(handle).busId)
        self._names[index] = _text(nv.nvmlDeviceGetName(handle))
        try:
            cc: tuple[int, int] | None = tuple(nv.nvmlDeviceGetCudaComputeCapability(handle))  # type: ignore[assignment]
        except (nv.NVMLError, *self._gaps):
            cc = None
        ident = GpuIdentity(index, uuid, bus, cc, None)
        self._identity[index] = ident
        return ident

    def _memory(self, handle: Any) -> tuple[int, int, int] | None:
        """(total, used, free) from the v2 struct, which matches nvidia-smi.

        The v1 struct counts driver-reserved memory (~480 MiB on an idle H100) as used.
        """
        nv = self._nvml
        try:
            m = nv.nvmlDeviceGetMemoryInfo(handle, version=nv.nvmlMemory_v2)
        except (nv.NVMLError_NotSupported, *self._gaps):  # a driver before the v2 struct (R510)
            try:
                m = nv.nvmlDeviceGetMemoryInfo(handle)
            except (nv.NVMLError_NotSupported, nv.NVMLError_NoPermission, *self._gaps):
                return None
        except nv.NVMLError_NoPermission:
            return None
        return int(m.total), int(m.used), int(m.free)

    def _processes(self, handle: Any, read: Callable[..., Any]) -> tuple[GpuProcess, ...]:
        out: dict[int, GpuProcess] = {}
        for kind, fn in self._process_calls.items():
            for p in read(f"{kind}_processes", lambda fn=fn: fn(handle)) or ():
                used = p.usedGpuMemory
                if used is None or used >= (1 << 63) - 1:  # NVML_VALUE_NOT_AVAILABLE
                    used = None
                user, command = self._procs.lookup(p.pid)
                out[p.pid] = GpuProcess(p.pid, used, kind, user, command)
        return tuple(sorted(out.values(), key=lambda p: -(p.used_bytes or 0)))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _gpu_error_text(nv: ModuleType, e: Exception) -> str:
    if isinstance(e, getattr(nv, "NVMLError_GpuIsLost", ())):
        return "GPU is lost (fell off the bus); a reboot or reset by the admin brings it back"
    if isinstance(e, getattr(nv, "NVMLError_NoPermission", ())):
        return "no permission to read this GPU"
    return f"NVML error: {e}"
