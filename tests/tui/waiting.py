"""Waiting for what the user would see: refreshes and workers run on their own clocks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(cond: Callable[[], object], timeout: float = 5.0, what: str = "the screen never showed it") -> None:
    """Poll `cond` until it is true, failing the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, what
        await asyncio.sleep(0.02)
