"""Every lifecycle step, with time, model, GPU and NVML memory before/after.

Kept in memory for the TUI's log and appended to a JSONL file for post-mortems (one line per
event, flushed at once, so a crash loses at most the event being written). A file that cannot
be written (full disk, read-only folder) never stops the scheduler: the events stay in memory
and the user is told once.
"""

from __future__ import annotations

import collections
import json
import os
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
        event = {"t": time.time(), "event": what, "model": model, **fields}
        self.events.append(event)
        if self.path is not None:
            try:
                with open(self.path, "a", encoding="utf-8", opener=private_opener) as f:
                    f.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:  # a full disk must not stop the scheduler; the in-memory log has it
                self._stop(e)
        for fn in list(self._listeners):
            fn(event)
        return event
