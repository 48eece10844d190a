"""The worker's two pipes: commands in on stdin, messages out on the original stdout.

stdout is taken over for the protocol before anything else runs, and fd 1 is pointed at
stderr, so a stray print() from a library can never corrupt a protocol line. A reader thread
follows stdin; at EOF (the parent died or closed us) the worker exits at once, even in the
middle of a generate, so no orphan keeps GPU memory.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

from gputui.core.protocol import ProtocolError, decode_op, encode


class Channel:
    def __init__(self, on_cancel: Callable[[str], None]) -> None:
        self._out = os.fdopen(os.dup(1), "wb", buffering=0)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._lock = threading.Lock()
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self._on_cancel = on_cancel
        threading.Thread(target=self._read, name="gputui-stdin", daemon=True).start()

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
                self.send({"event": "log", "level": "warning", "message": f"bad command ignored: {e}"})
                continue
            if msg["op"] == "cancel":
                self._on_cancel(str(msg.get("id")))
            elif msg["op"] == "ping":
                self.send({"event": "pong"})
            else:
                self.inbox.put(msg)
        os._exit(0)  # EOF: the parent died or let us go; the driver frees our memory
