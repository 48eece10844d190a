"""Finding the user's server, or starting one in the background.

One server per user and host (and a separate one for --demo, so the demo and the tests never
touch a real one). Its socket and lock are in the private runtime folder
(gputui.paths.runtime_dir, which does not move with XDG_RUNTIME_DIR and survives logout); the
lock file holds the server's pid. A socket file left by a server that died is stale - whoever
holds the lock may remove it.

Before a byte goes to a socket, the client checks that the folder and the socket are the
user's own and that the process serving it is too (SO_PEERCRED, in RemoteClient.connect):
another user's program at that path gets nothing, not even the hello.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from gputui.api.client import CommandRefused
from gputui.paths import (
    UnsafePath,
    check_runtime_dir,
    child_env,
    logs_dir,
    open_private,
    private_dir,
    runtime_dir,
)
from gputui.remote.client import RemoteClient, ServerError

START_TIMEOUT_S = 180.0  # a cold start imports the scheduler only; the demo builds tiny models first
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux


def api_socket_path(demo: bool) -> Path:
    """The OpenAI-compatible API's socket (`gputui serve --api`), beside the control socket."""
    return socket_path(demo).with_name("demo-api.sock" if demo else "api.sock")


def socket_path(demo: bool) -> Path:
    path = runtime_dir() / ("demo.sock" if demo else "server.sock")
    if len(os.fsencode(path)) > SOCKET_PATH_MAX:
        raise ServerError(f"the socket path {path} is too long for a Unix socket: set GPUTUI_RUNTIME_DIR to a "
                          "shorter folder of yours (gputui makes a private gputui-UID folder in it)")
    return path


def lock_path(demo: bool) -> Path:
    """The server's lock, which also holds its pid (`gputui stop --force` reads it)."""
    return runtime_dir() / ("demo-server.lock" if demo else "server.lock")


def log_path(demo: bool) -> Path:
    """The server's log (rotated by size: gputui.remote.logs)."""
    return logs_dir() / ("demo-server.log" if demo else "server.log")


def output_path(demo: bool) -> Path:
    """What a background server printed outside its log (a crash's traceback); new each start."""
    return logs_dir() / ("demo-server.out" if demo else "server.out")


def checked_socket(demo: bool) -> Path | None:
    """The socket's path if one is there and is this user's own; None if there is none.
    ServerError (one line) when the folder or the socket is not safely the user's."""
    path = socket_path(demo)
    try:
        check_runtime_dir(path.parent)
    except FileNotFoundError:
        return None
    except UnsafePath as e:
        raise ServerError(str(e)) from None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
        raise ServerError(f"{path} is not your gputui socket (owner uid {st.st_uid}, "
                          f"{stat.filemode(st.st_mode)}): nothing was sent to it; remove it")
    return path


async def find(demo: bool, timeout: float = 10.0) -> RemoteClient | None:
    """The running server's client, or None when there is none (no socket, or a stale one).
    ServerError when one is there but is not the user's, or does not answer."""
    path = checked_socket(demo)
    if path is None:
        return None
    try:
        return await RemoteClient.connect(path, timeout=timeout)
    except (ConnectionRefusedError, FileNotFoundError):
        return None  # stale: the server that made it is gone


def server_pid(demo: bool) -> int | None:
    """The pid the server wrote in its lock, if that process is alive and this user's."""
    try:
        text = lock_path(demo).read_text(errors="replace").strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            return None
    except OSError:
        return None
    return pid


def force_stop(demo: bool, wait_s: float = 30.0) -> str:
    """End the server whatever it speaks (another version, or not answering): SIGTERM to the
    pid in its lock - checked to be this user's and a gputui - then SIGCONT (a stopped one must
    run to exit), SIGKILL after `wait_s`. Returns one line for the user."""
    pid = server_pid(demo)
    if pid is None:
        return "no gputui server of yours is running here"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "no gputui server of yours is running here"
    if "gputui" not in cmdline:
        return f"pid {pid} in {lock_path(demo)} is not a gputui server (a reused pid): nothing was done"
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGCONT)
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        if exited(pid):
            return f"server pid {pid} stopped"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return f"server pid {pid} did not stop within {wait_s:.0f} s: killed (its workers end with it)"


def exited(pid: int) -> bool:
    """The process has ended (a zombie its parent has not collected yet counts as ended)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat_line.rsplit(b")", 1)[-1].split()[0] in (b"Z", b"X")


def start_background(demo: bool) -> subprocess.Popen[bytes]:
    """`gputui serve` in a session of its own, detached from this terminal: losing the terminal
    (SIGHUP) never reaches it. It writes its own log; what it prints besides goes to
    output_path (a traceback, should it crash)."""
    try:
        private_dir(logs_dir())
        out = open_private(output_path(demo), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    except OSError:  # an unwritable state folder must not keep the server from starting
        out = os.open(os.devnull, os.O_WRONLY)
    env = child_env()
    try:
        return subprocess.Popen([sys.executable, "-m", "gputui", "serve", "--background", *(["--demo"] if demo else [])],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, env=env)
    finally:
        os.close(out)


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
    """The last line the server wrote: its output (a traceback's last line) if any, else its log."""
    for path in (output_path(demo), log_path(demo)):
        try:
            lines = path.read_text(errors="replace").strip().splitlines()
        except OSError:
            continue
        if lines:
            return lines[-1]
    return f"see {log_path(demo)}"
