"""Waiting on conditions, never on wall-clock budgets: refreshes, workers and the scheduler run
on their own clocks, and a loaded 2-core CI machine runs them slowly. The timeout is a safety
net for a condition that never comes, set far beyond any normal wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(cond: Callable[[], object], timeout: float = 5.0, what: str = "the screen never showed it",
                     every: float = 0.02) -> None:
    """Poll `cond` every `every` seconds until it is true, failing the test after `timeout`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, what
        await asyncio.sleep(every)


def wait_until(cond: Callable[[], object], timeout: float, what: str, every: float = 0.2) -> None:
    """`eventually` for code outside an event loop (subprocesses, threads)."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, what
        time.sleep(every)
