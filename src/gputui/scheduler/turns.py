"""Whose request a model answers next: fair turns between the clients that share it.

Why: the worker (or its batch) takes requests in the order they arrive, so a script that sends
16 requests at once through the API would make the dashboard's chat wait for all 16 replies.
Here a model answers up to `slots` requests at once (its batch, else one); the others wait in a
queue per client, and each freed turn goes to the waiting client served least recently: the
dashboard's request is answered next, after only the replies already under way.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class FairTurns:
    REMEMBERED = 1024  # askers whose last turn is kept (connections come and go)

    def __init__(self) -> None:
        self.running = 0
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        self._last: dict[str, int] = {}  # asker -> the tick of its last turn
        self._tick = 0

    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    @asynccontextmanager
    async def turn(self, who: str, slots: int) -> AsyncIterator[None]:
        """Hold one of the model's `slots` turns while the body runs; wait, fairly, for one."""
        if self.running < max(1, slots) and not self._waiting:
            self.running += 1
            self._served(who)
        else:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(who, deque()).append(fut)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._release()  # granted as it was given up: pass the turn on
                else:
                    self._forget(who, fut)
                raise
        try:
            yield
        finally:
            self._release()

    def _forget(self, who: str, fut: asyncio.Future[None]) -> None:
        q = self._waiting.get(who)
        if q is not None and fut in q:
            q.remove(fut)
            if not q:
                del self._waiting[who]

    def _served(self, who: str) -> None:
        self._tick += 1
        self._last[who] = self._tick
        if len(self._last) > self.REMEMBERED:
            for name in sorted(self._last, key=self._last.__getitem__)[: len(self._last) // 2]:
                if name not in self._waiting:
                    del self._last[name]

    def _release(self) -> None:
        """The freed turn goes to the waiting asker served least recently (never: first)."""
        while self._waiting:
            who = min(self._waiting, key=lambda w: self._last.get(w, 0))
            q = self._waiting[who]
            fut = q.popleft()
            if not q:
                del self._waiting[who]
            if not fut.done():
                fut.set_result(None)  # the turn passes on: `running` stays the same
                self._served(who)
                return
        self.running -= 1
