"""Who owns a pid and what it runs, read from /proc (no psutil needed).

In a container the pids NVML reports may belong to the host's namespace; then /proc has no
such pid, and the user and command stay None ("host pid hidden").
"""

from __future__ import annotations

import os
import pwd


def process_user(pid: int) -> str | None:
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def process_command(pid: int, limit: int = 200) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(4096)
    except OSError:
        return None
    text = raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()
    return text[:limit] or None


class ProcessInfoCache:
    """User and command per pid, kept while the pid is seen, so a refresh reads /proc once."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[str | None, str | None]] = {}

    def lookup(self, pid: int) -> tuple[str | None, str | None]:
        hit = self._cache.get(pid)
        if hit is None:
            hit = (process_user(pid), process_command(pid))
            self._cache[pid] = hit
        return hit

    def keep_only(self, pids: set[int]) -> None:
        for pid in list(self._cache):
            if pid not in pids:
                del self._cache[pid]
