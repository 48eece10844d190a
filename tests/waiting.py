"""Waiting on conditions, never on wall-clock budgets: refreshes, workers and the scheduler run
on their own clocks, and a loaded 2-core CI machine runs them slowly. The timeout is a safety
net for a condition that never comes, set far beyond any normal wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(cond: Callable[[], object], timeout: float = 5.0, what: str = "the screen never showed it",
                     every: float = 0.02) -> None:
    """Poll `cond` every `every` seconds until it is true, failing the test after `timeout`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, what
        await asyncio.sleep(every)
