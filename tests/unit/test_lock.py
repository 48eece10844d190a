"""One scheduling gputui per user; a second one is told who holds the lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gputui.scheduler.lock import SchedulerLocked, UserLock


def test_a_second_instance_is_refused_and_told_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "gputui.lock"
    first = UserLock(path)
    first.acquire()
    code = (f"from gputui.scheduler.lock import UserLock\nfrom pathlib import Path\n"
            f"UserLock(Path({str(path)!r})).acquire()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and f"pid {os.getpid()}" in out.stderr
    first.release()
    second = UserLock(path)
    second.acquire()  # free again once the first let go
    second.release()


def test_the_lock_is_reentrant_only_across_release(tmp_path: Path) -> None:
    lock = UserLock(tmp_path / "l")
    lock.acquire()
    with pytest.raises(SchedulerLocked):
        UserLock(tmp_path / "l").acquire()
    lock.release()
