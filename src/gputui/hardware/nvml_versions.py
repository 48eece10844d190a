"""NVML calls whose entry point changed between drivers, and picking the one this driver has.

nvidia-ml-py follows the newest driver. In 13.x `nvmlDeviceGetComputeRunningProcesses` calls the
`_v3` symbol, and on a driver without it the unversioned wrapper raises
`NVMLLibraryMismatchError`, which is *not* an NVMLError; older bindings raise
`NVMLError_FunctionNotFound` for a missing `_v2` (driver 430/440: pynvml #43,
k8s-device-plugin #331); a binding may lack the `_v3` name altogether (nvidia-ml-py 11.x); and
some R525 drivers answer `_v3` with a struct of another layout, so pids come back out of range
(nvitop #181). nvitop keeps a whole layer for this (nvitop.api.libnvml); we keep this small one
instead, because nvitop pins nvidia-ml-py to a range of its own and we need only two calls
and one rule: try the versions newest first, skip a version the driver or binding lacks or
answers with nonsense, remember the one that worked.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any


class BindingGap(Exception):
    """No version of a call works with this driver and binding; str() says which call."""


def binding_gaps(nv: ModuleType) -> tuple[type[BaseException], ...]:
    """The errors meaning "this binding and this driver do not share that entry point"."""
    gaps: list[type[BaseException]] = [AttributeError, TypeError]
    for name in ("NVMLError_FunctionNotFound", "NVMLLibraryMismatchError", "NVMLError_ArgumentVersionMismatch"):
        cls = getattr(nv, name, None)
        if isinstance(cls, type):
            gaps.append(cls)
    return tuple(gaps)


# Linux never gives a pid above PID_MAX_LIMIT (2^22 on 64-bit). Not this machine's
# /proc/sys/kernel/pid_max: NVML reports host pids, and a container may see a smaller limit.
PID_MAX = 1 << 22


def plausible_processes(procs: Any) -> bool:
    """A process list read through the right struct: every pid a pid this kernel could give."""
    return all(isinstance(p.pid, int) and 0 < p.pid <= PID_MAX for p in procs)


class VersionedCall:
    """One NVML query with several entry points, newest first."""

    def __init__(self, nv: ModuleType, what: str, names: tuple[str, ...],
                 plausible: Callable[[Any], bool] = lambda _r: True) -> None:
        self.what = what
        self._nv = nv
        self._names = [n for n in names if callable(getattr(nv, n, None))]
        self._plausible = plausible
        self._gaps = binding_gaps(nv)
        self.chosen: str | None = None  # the version this driver answers (kept once it gave an answer)

    def __call__(self, handle: Any) -> Any:
        for name in [self.chosen] if self.chosen else self._names:
            try:
                result = getattr(self._nv, name)(handle)
            except self._gaps:
                continue
            if not self._plausible(result):  # a struct of another layout: the next version down
                continue
            if result:  # an empty answer proves nothing about the layout
                self.chosen = name
            return result
        raise BindingGap(f"{self.what}: no version of it works with this driver and nvidia-ml-py "
                         f"(tried {', '.join(self._names) or 'none'})")


def process_calls(nv: ModuleType) -> dict[str, VersionedCall]:
    """The running-process lists, graphics and compute."""
    def call(kind: str) -> VersionedCall:
        base = f"nvmlDeviceGet{kind}RunningProcesses"
        return VersionedCall(nv, f"{kind.lower()} processes", (f"{base}_v3", f"{base}_v2", base),
                             plausible_processes)

    return {"graphics": call("Graphics"), "compute": call("Compute")}
