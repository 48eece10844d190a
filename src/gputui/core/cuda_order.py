"""How CUDA will number the GPUs that nvidia-smi numbers 0..N-1.

nvidia-smi (NVML) orders GPUs by PCI bus id. CUDA does the same only under
CUDA_DEVICE_ORDER=PCI_BUS_ID; by default (FASTEST_FIRST) it puts the most capable GPU first
and breaks ties by bus id. CUDA_VISIBLE_DEVICES then filters and reorders what a process
sees, by CUDA index in the active order or by UUID. Getting this wrong loads a model onto
somebody else's GPU, so the dashboard shows both numberings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from gputui.core.snapshot import GpuSnapshot


@dataclass(frozen=True)
class GpuIdentity:
    nvml_index: int
    uuid: str
    pci_bus_id: str
    compute_capability: tuple[int, int] | None = None
    multiprocessors: int | None = None


def fastest_first(gpus: Sequence[GpuIdentity]) -> list[GpuIdentity]:
    """CUDA's default order: higher compute capability, then more SMs, then bus id."""

    def key(g: GpuIdentity) -> tuple[int, int, int, str]:
        major, minor = g.compute_capability or (0, 0)
        return (-major, -minor, -(g.multiprocessors or 0), g.pci_bus_id.lower())

    return sorted(gpus, key=key)


def pci_order(gpus: Sequence[GpuIdentity]) -> list[GpuIdentity]:
    return sorted(gpus, key=lambda g: g.pci_bus_id.lower())


def apply_visible_devices(
    ordered: Sequence[GpuIdentity], visible: str | None
) -> list[GpuIdentity]:
    """Filter an ordered list the way the CUDA runtime reads CUDA_VISIBLE_DEVICES.

    Entries are indices into `ordered` or UUID prefixes (GPU-...). Like CUDA, parsing stops at
    the first entry that is invalid or repeats one already taken.
    """
    if visible is None:
        return list(ordered)
    out: list[GpuIdentity] = []
    for raw in visible.split(","):
        item = raw.strip()
        if not item:
            break
        found: GpuIdentity | None = None
        if item.isdigit():
            i = int(item)
            found = ordered[i] if i < len(ordered) else None
        elif item.lower().startswith("gpu-"):
            matches = [g for g in ordered if g.uuid.lower().startswith(item.lower())]
            found = matches[0] if len(matches) == 1 else None
        if found is None or found in out:
            break
        out.append(found)
    return out


def cuda_indices(
    gpus: Sequence[GpuIdentity], visible: str | None, device_order: str | None
) -> dict[int, int]:
    """NVML index -> CUDA index for a process started with this environment."""
    order = pci_order(gpus) if (device_order or "").upper() == "PCI_BUS_ID" else fastest_first(gpus)
    seen = apply_visible_devices(order, visible)
    return {g.nvml_index: i for i, g in enumerate(seen)}


def with_cuda_indices(
    gpus: Sequence[GpuSnapshot], environ: Mapping[str, str]
) -> list[GpuSnapshot]:
    """Fill in each GPU's CUDA index under PCI_BUS_ID and under the default order."""
    idents = [
        GpuIdentity(g.index, g.uuid, g.pci_bus_id, g.compute_capability, g.multiprocessors)
        for g in gpus
        if g.pci_bus_id
    ]
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    by_pci = cuda_indices(idents, visible, "PCI_BUS_ID")
    by_default = cuda_indices(idents, visible, "FASTEST_FIRST")
    return [
        replace(g, cuda_index_pci=by_pci.get(g.index), cuda_index_default=by_default.get(g.index))
        for g in gpus
    ]
