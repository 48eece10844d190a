"""Writing a file so that a crash leaves the old or the new version, never a torn one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, keep_backup: bool = True) -> None:
    """temp file in the same folder -> fsync -> (old file to .bak) -> rename -> fsync folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    fd, tmp = tempfile.mkstemp(prefix=f".{bak.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(path.read_bytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, bak)
