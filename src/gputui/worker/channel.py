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
    def __init__(self, on_cancel: Callable[[str], None]) -> None:
        self._out = os.fdopen(os.dup(1), "wb", buffering=0)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._lock = threading.Lock()
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self._on_cancel = on_cancel
        threading.Thread(target=self._read, name="gputui-stdin", daemon=True).start()
        threading.Thread(target=self._beat, name="gputui-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            self.send({"event": "alive"})

    def send(self, msg: dict[str, Any]) -> None:
        data = encode(msg)
        with self._lock:
            try:
                self._out.write(data)
            except BrokenPipeError:
                os._exit(0)  # the parent is gone

    def _read(self) -> None:
        stdin = sys.stdin.buffer
        for line in stdin:
            try:
                msg = decode_op(line)
            except ProtocolError as e:
                rid = _request_id(line)
                if rid is not None:
                    self.send({"event": "error", "id": rid, "message": f"request refused: {e}"})
                else:
                    self.send({"event": "log", "level": "warning", "message": f"bad command ignored: {e}"})
                continue
            if msg["op"] == "cancel":
                self._on_cancel(str(msg.get("id")))
            else:
                self.inbox.put(msg)
        os._exit(0)  # EOF: the parent died or let us go; the driver frees our memory


def _request_id(line: bytes) -> str | None:
    """The id of a request line that failed to decode, if one can be read from it."""
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError):
        return None
    rid = msg.get("id") if isinstance(msg, dict) else None
    return rid if isinstance(rid, str) and len(rid) <= 64 else None
