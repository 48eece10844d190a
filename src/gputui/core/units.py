"""Byte counts stay integers until they are shown; these helpers do the showing."""

from __future__ import annotations

MiB = 1 << 20
GiB = 1 << 30


def mib(n_bytes: int | None) -> str:
    """Whole MiB, as nvidia-smi prints them, or N/A."""
    if n_bytes is None:
        return "N/A"
    return f"{n_bytes // MiB} MiB"


def human_bytes(n_bytes: int | None) -> str:
    """A short size for narrow panels: 812 MiB, 12.4 GiB."""
    if n_bytes is None:
        return "N/A"
    sign = "-" if n_bytes < 0 else ""
    n = abs(n_bytes)
    if n >= GiB:
        return f"{sign}{n / GiB:.1f} GiB"
    return f"{sign}{n // MiB} MiB"


def human_pair(a: int | None, b: int | None) -> str:
    """Two sizes in one unit, for a narrow column: "12.8/12.7 GiB", "812/-- MiB"."""
    known = [n for n in (a, b) if n is not None]
    if not known:
        return "-"
    big = max(abs(n) for n in known) >= GiB

    def num(n: int | None) -> str:
        if n is None:
            return "--"
        return f"{n / GiB:.1f}" if big else str(n // MiB)

    return f"{num(a)}/{num(b)} {'GiB' if big else 'MiB'}"
