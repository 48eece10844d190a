"""Writing a file so that a crash leaves the old or the new version, never a torn one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, keep_backup: bool = True) -> None:
    """temp file in the same folder -> fsync -> (old file to .bak) -> rename -> fsync folder.
    A symlink is written through (its target gets the new text; the link stays a link), as an
    editor saves a linked dotfile."""
    if path.is_symlink():
        path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if keep_backup and path.exists():
            bak = path.with_name(path.name + ".bak")
            _copy_backup(path, bak)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _copy_backup(path: Path, bak: Path) -> None:
    """The previous version to .bak, itself atomically (the live file is never missing)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{bak.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(path.read_bytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, bak)


def remove_stale_temps(path: Path) -> None:
    """Temp files of `path` (and of its .bak) left by a writer that was killed mid-save.
    Each temp name carries its writer's pid; a live writer's temp is left alone."""
    for name in (path.name, path.name + ".bak"):
        for tmp in path.parent.glob(f".{name}.*.tmp"):
            pid_text = tmp.name[len(name) + 2:].split(".", 1)[0]
            if not pid_text.isdigit() or _alive(int(pid_text)):
                continue
            try:
                tmp.unlink()
            except OSError:
                pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours, from an earlier save that failed: not in use now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
