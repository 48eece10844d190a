"""What the dashboard writes to the terminal while nothing happens, against nvitop: bytes per
second after the first screen, and CPU, each program in its own pseudo-terminal of the same
size at the same refresh (what tmux's pipe-pane records, without needing tmux).

`python -m bench terminal [--real]`: --real watches this machine's GPUs (and nvitop too, if it
is installed); otherwise gputui's SIMULATED server (--demo), 8 GPUs."""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import signal
import struct
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import Any

from bench.common import say

SETTLE_S = 6.0  # the first screen, the server's start and the models' rows come first
WINDOW_S = 10.0
RUNS = ((0.5, 80, 24), (0.5, 200, 50), (2.0, 200, 50))  # refresh (s), columns, rows


def in_pty(argv: list[str], env: dict[str, str], cols: int, rows: int, settle: float = SETTLE_S,
           window: float = WINDOW_S, keep: Path | None = None) -> dict[str, Any]:
    """Run argv in a fresh pseudo-terminal of cols x rows; bytes it writes in the window after
    `settle` seconds, and its CPU seconds (children included) over that window."""
    import psutil

    pid, fd = os.forkpty()
    if pid == 0:  # the child: its terminal's size is set before the program starts
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        os.execvpe(argv[0], argv, env)
    proc = psutil.Process(pid)
    start = time.monotonic()
    counted, cpu0, out = 0, None, bytearray()
    while time.monotonic() - start < settle + window:
        ready, _, _ = select.select([fd], [], [], 0.05)
        now = time.monotonic() - start
        if cpu0 is None and now >= settle:
            cpu0 = _cpu(proc)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if now >= settle:
            counted += len(chunk)
            out += chunk
    cpu1 = _cpu(proc)
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    os.close(fd)
    if keep is not None:
        keep.write_bytes(bytes(out))
    return {"bytes_per_s": round(counted / window, 1), "cpu_percent": round(100 * (cpu1 - (cpu0 or cpu1)) / window, 2)}


def _cpu(proc: Any) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:  # noqa: BLE001 - a child that ended in between
            pass
    return total


async def run(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="gputui-bench-"))
    env = {**os.environ, "TERM": "xterm-256color", "GPUTUI_DATA_DIR": str(home / "data"),
           "GPUTUI_CONFIG_DIR": str(home / "config"), "GPUTUI_RUNTIME_DIR": str(home / "run"),
           "GPUTUI_DEMO_GPUS": os.environ.get("GPUTUI_DEMO_GPUS", "8")}
    (home / "run").mkdir(mode=0o700)
    demo = [] if args.real else ["--demo"]
    gputui = [sys.executable, "-m", "gputui", *demo]
    nvitop = [sys.executable, "-m", "nvitop"] if args.real and _importable("nvitop") else None
    keep = Path(os.environ.get("OUT", "/tmp")) / "terminal"
    keep.mkdir(parents=True, exist_ok=True)
    import subprocess

    # another user's process holding memory on the GPU, as in issue 20's measurement
    other = subprocess.Popen([sys.executable, "-c", "import torch, time; x = torch.empty(1 << 30, dtype=torch.uint8, "
                              "device='cuda'); time.sleep(3600)"]) if args.real else None
    try:
        for interval, cols, rows in RUNS:
            programs = {"gputui": [*gputui, "--interval", str(interval)]}
            if nvitop:
                programs["nvitop"] = [*nvitop, "--interval", str(interval)]
            for name, argv in programs.items():
                result = in_pty(argv, env, cols, rows, keep=keep / f"{name}-{cols}x{rows}-{interval}.bin")
                say(step="idle", program=name, interval_s=interval, size=f"{cols}x{rows}", **result)
    finally:
        if other is not None:
            other.kill()
        subprocess.run([*gputui, "stop"], env=env, capture_output=True, timeout=60)


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
