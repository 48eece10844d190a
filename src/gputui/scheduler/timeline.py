"""Every lifecycle step, with time, model, GPU and NVML memory before/after.

Kept in memory for the TUI's log and appended to a JSONL file for post-mortems. The file is
written by a thread of its own, never on the scheduler's (the UI's) event loop: a load records
a dozen events, and an fsync each took the loop away from the keys. Each line is flushed and
fsynced as it is written, so a crash loses at most the events still queued. A file that cannot
be written (full disk, read-only folder) never stops the scheduler: the events stay in memory
and the user is told once.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gputui.paths import note, private_dir, private_opener


class Timeline:
    def __init__(self, path: Path | None = None, keep: int = 500) -> None:
        self.path = path
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        if path is not None:
            try:
                private_dir(path.parent)
            except OSError as e:
                self._stop(e)

    def _stop(self, e: OSError) -> None:
        note(f"the event log {self.path} cannot be written ({e.strerror or e}); events are kept in memory only")
        self.path = None

    def subscribe(self, fn: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(fn)

    def record(self, what: str, model: str | None = None, **fields: Any) -> dict[str, Any]:
        # plain JSON from here on: the event crosses the client seam and goes to the file as it is
        line = json.dumps({"t": time.time(), "event": what, "model": model, **fields}, ensure_ascii=False, default=str)
        event: dict[str, Any] = json.loads(line)
        self.events.append(event)
        if self.path is not None:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write, name="gputui-timeline", daemon=True)
                self._writer.start()
            self._lines.put(line + "\n")
        for fn in list(self._listeners):
            fn(event)
        return event

    def _write(self) -> None:
        while True:
            line = self._lines.get()
            if line is None:
                return
            path = self.path
            if path is None:
                continue  # stopped: drain and drop
            try:
                with open(path, "a", encoding="utf-8", opener=private_opener) as f:
                    f.write(line)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                self._stop(e)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every recorded event is in the file (at exit, and in tests)."""
        writer = self._writer
        if writer is None:
            return
        self._writer = None
        self._lines.put(None)
        writer.join(timeout)
