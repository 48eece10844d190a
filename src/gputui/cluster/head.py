"""Whether the Ray head (its GCS) is still there, watched by gputui itself.

Without the GCS a Ray cluster is over: every raylet gives up after Ray's reconnect timeout (60 s)
and takes its workers along, and a driver (our server) aborts itself at the same moment - the
whole gputui server, mid-`stop` if need be, leaving a stale socket. Actor calls between workers do
not pass through the GCS, so in the meantime a model on another node still looks ready. So the
server tells Ray never to abort it (`DRIVER_ENV`, set before `ray.init`, over any value in the
environment), and this watch probes
the GCS's port with plain TCP connects: when nothing has answered for `LOST_AFTER_S`, the head is
declared lost once, every Ray model fails with that one reason at the same moment, nothing more is
asked of Ray (its calls would hang on the missing GCS), and `gputui stop` still ends the server.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

INTERVAL_S = 1.0
LOST_AFTER_S = 5.0  # Ray itself waits 60 s; a head that restarts within seconds keeps its cluster
CONNECT_TIMEOUT_S = 1.0
CONFIRM_S, CONFIRM_EVERY_S = 3.0, 0.2  # how long an actor's unexplained end waits on the head's word
# Ray reads RAY_<config name> from the environment when it is first imported (not at ray.init); 10^6 s
# (11 days) stands for "never": no one leaves a server without its head that long
DRIVER_ENV = {"RAY_gcs_rpc_server_reconnect_timeout_s": str(10**6)}


def tcp_answers(address: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    host, _sep, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


class HeadWatch:
    """A daemon thread probing the GCS at `address`; `lost` is None while it answers, then the
    reason, for good (a GCS that comes back is a new cluster our actors are not part of)."""

    def __init__(self, address: str, *, answers: Callable[[str], bool] = tcp_answers,
                 interval: float = INTERVAL_S, lost_after: float = LOST_AFTER_S) -> None:
        self.address = address
        self.lost: str | None = None
        self._answers, self._interval, self._lost_after = answers, interval, lost_after
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gputui-ray-head-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        silent_since: float | None = None
        while not self._stop.wait(self._interval):
            if self._answers(self.address):
                silent_since = None
                continue
            now = time.monotonic()
            silent_since = now if silent_since is None else silent_since
            if now - silent_since >= self._lost_after:
                self.lost = self._why()
                return

    def _why(self) -> str:
        return (f"the Ray head at {self.address} was lost (its cluster ends with it; restart the cluster "
                "and `gputui serve --ray`)")

    def lost_now(self, within: float = CONFIRM_S) -> str | None:
        """The reason, when the head is lost or stops answering within `within` seconds: an actor
        that ended as its head went away was not the model's fault, but the GCS may outlive the
        actor by a moment (a node's raylet is ended first, and its workers with it)."""
        end = time.monotonic() + within
        while not self.lost and self._answers(self.address):
            if time.monotonic() >= end:
                return None
            time.sleep(CONFIRM_EVERY_S)
        return self.lost or self._why()

    def close(self) -> None:
        self._stop.set()


def bounded(call: Callable[[], T], timeout: float, otherwise: T) -> T:
    """`call()` in a daemon thread, or `otherwise` after `timeout`: a Ray call that asks the GCS
    (ray.nodes()) waits for as long as Ray would wait to reconnect - for ever, as DRIVER_ENV sets
    it - and a pool thread stuck in one would hold up the interpreter's exit and every later
    to_thread call. A daemon thread left behind is dropped at exit."""
    out: list[T] = []
    failed: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            out.append(call())
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            failed.append(e)
        finally:
            done.set()

    threading.Thread(target=run, name="gputui-ray-call", daemon=True).start()
    if not done.wait(timeout):
        return otherwise
    if failed:
        raise failed[0]
    return out[0]
