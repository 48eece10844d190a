"""Waiting for what the user would see: refreshes and workers run on their own clocks."""

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
