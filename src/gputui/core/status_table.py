"""`gputui status` as plain text: one block per GPU, for terminals, logs and bug reports."""

from __future__ import annotations

from gputui.core.memory import HEADROOM_WARNING
from gputui.core.snapshot import ServerSnapshot
from gputui.core.text import visible
from gputui.core.units import human_bytes, mib


def _na(v: object, unit: str = "") -> str:
    return "N/A" if v is None else f"{v}{unit}"


def status_text(snap: ServerSnapshot) -> str:
    lines: list[str] = []
    if snap.simulated:
        lines.append("SIMULATED server (gputui --demo): not your hardware")
    if snap.error:
        lines.append(f"error: {snap.error}")
    lines.append(f"driver {_na(snap.driver_version)}  CUDA {_na(snap.cuda_driver_version)}")
    header = f"{'GPU':>3} {'cuda':>4} {'name':<24} {'used':>11} {'total':>11} {'util':>5} {'temp':>5} {'power':>7}  headroom"
    lines.append(header)
    for g in snap.gpus:
        if g.error:
            lines.append(f"{g.index:>3} {'-':>4} {g.name[:24]:<24} ERROR: {g.error}")
            continue
        power = "N/A" if g.power_w is None else f"{g.power_w:.0f}W"
        lines.append(
            f"{g.index:>3} {_na(g.cuda_index_pci):>4} {g.name[:24]:<24} {mib(g.used_bytes):>11} "
            f"{mib(g.total_bytes):>11} {_na(g.util_percent, '%'):>5} {_na(g.temperature_c, 'C'):>5} "
            f"{power:>7}  {human_bytes(g.headroom_bytes)}"
        )
        lines.append(f"    {g.uuid}  bus {g.pci_bus_id}")
        if g.cuda_index_default != g.cuda_index_pci:
            lines.append(f"    default CUDA order numbers it cuda:{_na(g.cuda_index_default)}; "
                         "set CUDA_DEVICE_ORDER=PCI_BUS_ID to match nvidia-smi")
        if g.first_matmul_would_fail:
            lines.append(f"    WARNING: {HEADROOM_WARNING}")
        for p in g.processes:
            tag = f" [gputui: {p.model}]" if p.ours else ""
            used = "N/A" if p.used_bytes is None else str(p.used_bytes >> 20)
            lines.append(f"    pid {p.pid:>7} {p.kind:<8} {_na(p.user):<10} {used:>7} MiB  {(p.command or '?')[:60]}{tag}")
    # names, command lines and error text come from other users and libraries: drawn inert
    return "\n".join(visible(line, one_line=True) for line in lines)
