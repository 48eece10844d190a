"""Finding the user's server, or starting one in the background.

One server per user (and a separate one for --demo, so the demo and the tests never touch a
real one). Its socket and lock are in the private runtime folder (gputui.paths.runtime_dir):
a socket file left by a server that died is stale - whoever holds the lock may remove it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from gputui.api.client import CommandRefused
from gputui.paths import data_dir, open_private, private_dir, runtime_dir
from gputui.remote.client import RemoteClient, ServerError

START_TIMEOUT_S = 180.0  # a cold start imports the scheduler only; the demo builds tiny models first
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux


def socket_path(demo: bool) -> Path:
    path = runtime_dir() / ("demo.sock" if demo else "server.sock")
    if len(os.fsencode(path)) > SOCKET_PATH_MAX:
        raise ServerError(f"the socket path {path} is too long for a Unix socket: set GPUTUI_RUNTIME_DIR to a "
                          "shorter private folder")
    return path


def lock_path(demo: bool) -> Path:
    return runtime_dir() / ("demo-server.lock" if demo else "server.lock")


def log_path(demo: bool) -> Path:
    return data_dir() / ("demo-server.log" if demo else "server.log")


async def find(demo: bool) -> RemoteClient | None:
    """The running server's client, or None when there is none (no socket, or a stale one)."""
    path = socket_path(demo)
    if not path.exists():
        return None
    try:
        return await RemoteClient.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return None  # stale: the server that made it is gone


def start_background(demo: bool) -> subprocess.Popen[bytes]:
    """`gputui serve` in a session of its own, detached from this terminal: losing the terminal
    (SIGHUP) never reaches it. Its output goes to the server log."""
    try:
        private_dir(data_dir())
        log = open_private(log_path(demo), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    except OSError:  # an unwritable data folder must not keep the server from starting
        log = os.open(os.devnull, os.O_WRONLY)
    src = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    try:
        return subprocess.Popen([sys.executable, "-m", "gputui", "serve", *(["--demo"] if demo else [])],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env)
    finally:
        os.close(log)


async def connect_or_start(demo: bool) -> tuple[RemoteClient, bool]:
    """(client, whether we started the server now)."""
    client = await find(demo)
    if client is not None:
        return client, False
    proc = start_background(demo)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while loop.time() < deadline:
        await asyncio.sleep(0.1)
        if proc.poll() is not None:
            raise CommandRefused(f"the gputui server did not start (exit code {proc.returncode}): {log_tail(demo)}")
        client = await find(demo)
        if client is not None:
            return client, True
    raise CommandRefused(f"the gputui server did not open its socket within {START_TIMEOUT_S:.0f} s: {log_tail(demo)}")


def log_tail(demo: bool) -> str:
    try:
        lines = log_path(demo).read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"see {log_path(demo)}"
    return lines[-1] if lines else f"see {log_path(demo)}"
