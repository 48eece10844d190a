"""The worker's two pipes: commands in on stdin, messages out on the original stdout.

stdout is taken over for the protocol before anything else runs, and fd 1 is pointed at
stderr, so a stray print() from a library can never corrupt a protocol line. A reader thread
follows stdin; at EOF (the parent died or closed us) the worker exits at once, even in the
middle of a generate, so no orphan keeps GPU memory. A third says "alive" every second, so the
parent can tell a slow load from a stopped or hung worker and end the latter.

A request the worker cannot read (wrong field types, over the size limit) is answered with an
error for its id when it has one: a client never waits for a reply that will not come.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from gputui.core.protocol import HEARTBEAT_S, ProtocolError, decode_op, encode


class Channel:
    """The worker's side of the protocol, whatever carries it: an inbox of decoded commands, a
    send(), and the heartbeat."""

    def __init__(self, on_cancel: Callable[[str], None]) -> None:
        self._lock = threading.Lock()
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self._on_cancel = on_cancel

    def _start_heartbeat(self) -> None:
        threading.Thread(target=self._beat, name="gputui-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            self.send({"event": "alive"})

    def send(self, msg: dict[str, Any]) -> None:
        raise NotImplementedError

    def feed(self, line: bytes) -> None:
        """One command line from the parent."""
        try:
            msg = decode_op(line)
        except ProtocolError as e:
            rid = _request_id(line)
            if rid is not None:
                self.send({"event": "error", "id": rid, "message": f"request refused: {e}"})
            else:
                self.send({"event": "log", "level": "warning", "message": f"bad command ignored: {e}"})
            return
        if msg["op"] == "cancel":
            self._on_cancel(str(msg.get("id")))
        else:
            self.inbox.put(msg)


class PipeChannel(Channel):
    """stdin / the original stdout: a worker process this machine spawned."""

    def __init__(self, on_cancel: Callable[[str], None]) -> None:
        super().__init__(on_cancel)
        self._out = os.fdopen(os.dup(1), "wb", buffering=0)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        threading.Thread(target=self._read, name="gputui-stdin", daemon=True).start()
        self._start_heartbeat()

    def send(self, msg: dict[str, Any]) -> None:
        data = encode(msg)
        with self._lock:
            try:
                self._out.write(data)
            except BrokenPipeError:
                os._exit(0)  # the parent is gone

    def _read(self) -> None:
        for line in sys.stdin.buffer:
            self.feed(line)
        os._exit(0)  # EOF: the parent died or let us go; the driver frees our memory


class QueueChannel(Channel):
    """In-process queues, for a worker hosted by something else (a Ray actor): commands come in
    through feed(), messages go out through take()."""

    def __init__(self, on_cancel: Callable[[str], None]) -> None:
        super().__init__(on_cancel)
        self.outbox: queue.Queue[bytes] = queue.Queue()
        self._start_heartbeat()

    def send(self, msg: dict[str, Any]) -> None:
        self.outbox.put(encode(msg))

    def take(self, timeout: float) -> list[bytes]:
        """What was sent since the last call, waiting up to `timeout` for the first message."""
        try:
            out = [self.outbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                out.append(self.outbox.get_nowait())
            except queue.Empty:
                return out


def _request_id(line: bytes) -> str | None:
    """The id of a request line that failed to decode, if one can be read from it."""
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError):
        return None
    rid = msg.get("id") if isinstance(msg, dict) else None
    return rid if isinstance(rid, str) and len(rid) <= 64 else None
