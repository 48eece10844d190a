"""Every lifecycle step, with time, model, GPU and NVML memory before/after.

Kept in memory for the TUI's log and appended to a JSONL file for post-mortems. The file is
written by a thread of its own, never on the scheduler's (the UI's) event loop: a load records
a dozen events, and an fsync each took the loop away from the keys. Each line is flushed and
fsynced as it is written, so a crash loses at most the events still queued. A file that cannot
be written (full disk, no descriptors left, read-only folder) never stops the scheduler: the
lines wait in memory (up to BACKLOG_LINES), are tried again every RETRY_EVERY_S, and are
written when the file can take them; a write that failed partway is cut back, so the file never
holds a torn line. Every client hears once that the log stopped and once that it resumed (a
`log_stopped` / `log_resumed` record in the event stream).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gputui.paths import append_whole, note, private_dir

BACKLOG_LINES = 100_000
RETRY_EVERY_S = 1.0


class Timeline:
    def __init__(self, path: Path | None = None, keep: int = 500) -> None:
        self.path = path
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
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
                with contextlib.suppress(RuntimeError):
                    self._loop = asyncio.get_running_loop()  # where the writer's news is told
                self._writer = threading.Thread(target=self._write, name="gputui-timeline", daemon=True)
                self._writer.start()
            self._lines.put(line + "\n")
        for fn in list(self._listeners):
            fn(event)
        return event

    def _write(self) -> None:
        waiting: collections.deque[str] = collections.deque(maxlen=BACKLOG_LINES)
        failing: str | None = None
        while True:
            try:
                line = self._lines.get(timeout=RETRY_EVERY_S if waiting else None)
            except queue.Empty:
                line = ""
            if line is None:
                if waiting:
                    with contextlib.suppress(OSError):
                        append_whole(self.path, "".join(waiting)) if self.path else None
                return
            if line:
                waiting.append(line)
            path = self.path
            if path is None or not waiting:
                waiting.clear()
                continue
            try:
                append_whole(path, "".join(waiting))
            except OSError as e:
                if failing is None:
                    failing = e.strerror or str(e)
                    self._tell("log_stopped", path=str(path), error=failing, kept_in_memory=True)
                continue
            waiting.clear()
            if failing is not None:
                failing = None
                self._tell("log_resumed", path=str(path))

    def _tell(self, what: str, **fields: Any) -> None:
        """A record from the writer thread, made on the scheduler's loop (where the event stream
        is numbered); it goes to the file too, once the file takes lines again."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(lambda: self.record(what, None, **fields))

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every recorded event is in the file (at exit, and in tests)."""
        writer = self._writer
        if writer is None:
            return
        self._writer = None
        self._lines.put(None)
        writer.join(timeout)
