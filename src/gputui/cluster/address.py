"""Which Ray cluster `gputui serve --ray ADDRESS` may join, decided before Ray is asked.

ray.init() on an address where nothing listens retries for minutes, printing C++ warnings in a
loop and ignoring Ctrl-C; and `auto` joins whatever cluster `ray start` last wrote to
/tmp/ray/ray_current_cluster on this machine - on a shared machine, possibly another user's,
whose actors would then run our workers (and Ray's ports take anyone's code). So: `auto` is
resolved here, and refused when the file (written by whoever started that cluster) is not ours;
the address is then probed with one bounded TCP connect, and a refusal is one line.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

CONNECT_TIMEOUT_S = 5.0
RAY_ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")  # where `ray start --head` writes its address


class ClusterRefused(ValueError):
    """One line for the user: why this cluster is not joined."""


def resolve(address: str, address_file: Path = RAY_ADDRESS_FILE) -> str:
    """host:port for `address` ("auto": the local cluster's, if this user started it)."""
    if address != "auto":
        return address
    env = os.environ.get("RAY_ADDRESS")
    if env:
        return env
    try:
        st = os.lstat(address_file)
        text = address_file.read_text().strip()
    except OSError:
        raise ClusterRefused("--ray auto: no Ray cluster was started on this machine (`ray start --head` "
                             "writes its address); give the address instead") from None
    if st.st_uid != os.getuid():
        raise ClusterRefused(f"--ray auto: the local Ray cluster ({text or '?'}) was started by uid {st.st_uid}, "
                             "not by you: gputui will not run your models on another user's cluster; start your "
                             "own (`ray start --head --port N`) and give its address")
    return text


def probe(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """One TCP connect to the GCS at host:port; ClusterRefused (one line) if none answers."""
    host, sep, port = address.rpartition(":")
    if address.startswith("ray://") or not sep:
        return  # a Ray client address, or a form Ray resolves itself: Ray's own errors then
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except ValueError:
        raise ClusterRefused(f"--ray {address}: not a host:port") from None
    except OSError as e:
        raise ClusterRefused(f"cannot reach the Ray cluster at {address}: {e.strerror or e} "
                             f"(nothing answered within {timeout:.0f} s)") from None
