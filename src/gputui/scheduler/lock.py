"""One scheduling gputui per user: a second one monitors but does not fight over GPUs.

The lock file lives in the user's private runtime folder (gputui.paths.runtime_dir), never in
a shared /tmp, and is opened without following symlinks and checked to be the user's own: a
file another user planted there is refused in one line, and never written.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from gputui.paths import UnsafePath, open_private, private_dir, private_runtime_dir, runtime_dir


class SchedulerLocked(RuntimeError):
    def __init__(self, message: str, holder: str = "?") -> None:
        super().__init__(message)
        self.holder = holder  # the pid the holder wrote, when it can be read


def default_lock_path() -> Path:
    return runtime_dir() / "scheduler.lock"


class UserLock:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_lock_path()
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            if self.path.parent == runtime_dir():
                private_runtime_dir()  # made and checked as the server's folder
            else:
                private_dir(self.path.parent)
            fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as e:  # UnsafePath says what to remove; other errors say what failed
            why = str(e) if isinstance(e, UnsafePath) else f"{self.path}: {e.strerror or e}"
            raise SchedulerLocked(f"cannot take the scheduler lock: {why}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raw = os.read(fd, 64).decode(errors="replace").strip()
            holder = raw if raw.isdigit() else "?"  # the holder wrote its pid; anything else is noise
            os.close(fd)
            raise SchedulerLocked(
                f"another gputui (pid {holder}) is scheduling models for this user; "
                "this one only monitors (close the other to load models here)", holder
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
