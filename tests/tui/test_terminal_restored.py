"""SIGTERM or SIGHUP to the dashboard gives the terminal back as it was (hostile-server issue,
item 12): the alternate screen left, mouse reporting off. Run in a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def read_until(fd: int, want: bytes, timeout: float) -> bytes:
    out = b""
    end = time.monotonic() + timeout
    while want not in out and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_leaves_the_terminal_as_it_was(sig: signal.Signals) -> None:
    main, sub = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "gputui", "--demo", "--no-profile"], stdin=sub, stdout=sub,
                            stderr=sub, env=env, close_fds=True, start_new_session=True)
    os.close(sub)
    try:
        drawn = read_until(main, b"SIMULATED", 120)
        assert b"\x1b[?1049h" in drawn, "the dashboard never opened"
        assert b"\x1b[?1000h" in drawn or b"\x1b[?1003h" in drawn  # mouse reporting on
        proc.send_signal(sig)
        tail = read_until(main, b"\x1b[?1049l", 60)
        assert proc.wait(60) is not None
        assert b"\x1b[?1049l" in tail, "left in the alternate screen"
        assert b"\x1b[?1000l" in tail or b"\x1b[?1003l" in tail, "mouse reporting left on"
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
