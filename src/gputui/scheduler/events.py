"""The scheduler's one event stream: model changes and lifecycle records, numbered in the order
they happened on the scheduler's loop.

A client follows it from a sequence number: it gets what it missed (from a ring of the last
KEEP events), then live events as they come. A client that asks from further back than the
ring reaches first gets a `reset` event holding every model's view, so it can redraw and go on.
Emitting never waits: a follower that cannot keep up with MAX_BEHIND events is told to rejoin
(a `reset` on its next read) instead of holding the scheduler back.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from gputui.api.views import Event

KEEP = 4000
MAX_BEHIND = 10_000


class EventLog:
    def __init__(self, models_json: Callable[[], list[dict[str, Any]]], keep: int = KEEP) -> None:
        self._models_json = models_json  # every model's view now, for a reset
        self._ring: collections.deque[Event] = collections.deque(maxlen=keep)
        self._seq = 0
        self._followers: set[asyncio.Queue[Event | None]] = set()

    @property
    def last_seq(self) -> int:
        return self._seq

    def emit(self, type_: str, model: str | None, data: dict[str, Any]) -> Event:
        """On the scheduler's loop only (that is what makes the numbering the real order)."""
        self._seq += 1
        ev = Event(self._seq, time.time(), type_, model, data)
        self._ring.append(ev)
        for q in list(self._followers):
            if q.qsize() >= MAX_BEHIND:
                self._followers.discard(q)
                q.put_nowait(None)  # too slow: it rejoins with a reset
            else:
                q.put_nowait(ev)
        return ev

    def _reset(self) -> Event:
        return Event(self._seq, time.time(), "reset", None, {"models": self._models_json()})

    async def follow(self, since: int = 0) -> AsyncIterator[Event]:
        """Events after `since`, then live ones, for as long as the caller iterates."""
        q: asyncio.Queue[Event | None] = asyncio.Queue()
        self._followers.add(q)
        try:
            oldest = self._ring[0].seq if self._ring else self._seq + 1
            if since + 1 < oldest and since < self._seq:
                # it missed more than is kept. `since` is the reset's own number, taken with it: an
                # event emitted while the caller holds the reset must still come after it
                reset = self._reset()
                since = reset.seq
                yield reset
            for ev in list(self._ring):
                if ev.seq > since:
                    yield ev
                    since = ev.seq
            while True:
                got = await q.get()
                if got is None:  # dropped for being too slow: start over from a reset
                    reset = self._reset()
                    since = reset.seq
                    q = asyncio.Queue()
                    self._followers.add(q)
                    yield reset
                    continue
                if got.seq > since:
                    yield got
                    since = got.seq
        finally:
            self._followers.discard(q)
