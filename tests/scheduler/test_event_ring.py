"""The event ring: a follower gets what it missed, in order and once, then live events; one that
asks from before the ring gets a reset holding every model; one too slow to keep up is told to
rejoin with a reset, and emitting never waits for it."""

from __future__ import annotations

import asyncio
from typing import Any

from gputui.api.views import Event
from gputui.scheduler import events as events_module
from gputui.scheduler.events import EventLog

MODELS = [{"name": "glm"}]


def log(keep: int = 5) -> EventLog:
    return EventLog(lambda: MODELS, keep=keep)


async def take(it: Any, n: int) -> list[Event]:
    return [await asyncio.wait_for(it.__anext__(), 10) for _ in range(n)]


async def test_a_follower_gets_what_it_missed_then_live_events_each_once_in_order() -> None:
    ring = log()
    for i in range(3):
        ring.emit("timeline", "glm", {"i": i})
    it = ring.follow(since=1).__aiter__()
    got = await take(it, 2)
    ring.emit("timeline", "glm", {"i": 3})
    got += await take(it, 1)
    assert [e.seq for e in got] == [2, 3, 4] and [e.data["i"] for e in got] == [1, 2, 3]
    assert ring.last_seq == 4


async def test_asking_from_before_the_ring_gives_a_reset_with_every_model_then_what_is_kept() -> None:
    ring = log(keep=3)
    for i in range(10):
        ring.emit("timeline", "glm", {"i": i})
    it = ring.follow(since=2).__aiter__()
    first = await take(it, 1)
    assert first[0].type == "reset" and first[0].data == {"models": MODELS} and first[0].seq == 10
    ring.emit("model", "glm", {"name": "glm"})
    nxt = await take(it, 1)
    assert nxt[0].seq == 11  # nothing replayed twice after the reset


async def test_a_follower_too_slow_is_told_to_rejoin_and_emit_never_waits(monkeypatch: Any) -> None:
    monkeypatch.setattr(events_module, "MAX_BEHIND", 4)
    ring = log(keep=100)
    it = ring.follow(since=0).__aiter__()
    starter = asyncio.ensure_future(it.__anext__())  # registered, waiting for the first event
    await asyncio.sleep(0)
    for i in range(10):  # never blocks, though no one reads
        ring.emit("timeline", "glm", {"i": i})
    first = await asyncio.wait_for(starter, 10)
    rest = await take(it, 4)
    got = [first, *rest]
    assert [e.seq for e in got[:4]] == [1, 2, 3, 4]  # what it had queued, then
    assert got[4].type == "reset" and got[4].seq == 10  # told to start over, not holding the scheduler back
    ring.emit("model", "glm", {"name": "glm"})
    assert [e.seq for e in await take(it, 1)] == [11]  # and followed live again
