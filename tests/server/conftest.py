"""A real `gputui serve --demo` in a subprocess, for the server's tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Served:
    proc: subprocess.Popen[str]
    socket: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(private_folders: Path, *extra: str) -> Served:
    log = private_folders / f"serve-{time.monotonic_ns()}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gputui", "serve", "--demo", *extra], stdout=out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    from gputui.paths import runtime_dir

    sock = runtime_dir() / "demo.sock"
    end = time.monotonic() + 120
    while "listening on" not in log.read_text(errors="replace"):  # a stale socket file may be there before
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < end, "the server never opened its socket"
        time.sleep(0.05)
    return Served(proc, sock, log)


@pytest.fixture
def served(private_folders: Path) -> Iterator[Served]:
    s = start_server(private_folders)
    yield s
    if s.proc.poll() is None:
        s.proc.send_signal(signal.SIGTERM)
        try:
            s.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(s.proc.pid, signal.SIGKILL)
