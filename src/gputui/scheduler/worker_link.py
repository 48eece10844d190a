"""How the scheduler reaches one worker, wherever it runs.

A link carries the worker protocol's lines both ways, the worker's log lines back, and ends the
worker. WorkerHandle (stages, requests, waits with bounds) sits on any link and cannot tell
where the worker is: a local one is a child process (ProcessLink, over its pipes), a Ray one an
actor whose calls carry the same lines (cluster/launcher.py's ActorLink). A link says what a
worker is to us - lines in, lines out, an end - rather than making one thing look like another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Protocol


class WorkerGone(ConnectionError):
    """The worker no longer takes input: its pipe closed, or its actor is gone."""


class LineDropped(Exception):
    """A line from the worker was over the size limit and was dropped; the next one is readable."""


class WorkerLink(Protocol):
    pid: int
    # why the worker's machine went away with it (a Ray node or head lost); None while it runs
    # and for a local worker, whose machine cannot go without taking the scheduler along
    machine_lost: str | None

    def send(self, data: bytes) -> Awaitable[None]:
        """Put protocol lines on their way now, in order - a caller cancelled while it waits has
        still sent them (a cancel or shutdown is never lost that way) - and return what finishes
        when they are delivered (it waits while the worker is slow to read). WorkerGone, now or
        from the wait, once the worker no longer reads."""
        ...

    async def read_message(self) -> bytes:
        """The worker's next protocol line; b"" once it has ended. LineDropped for a line over
        the limit."""
        ...

    async def read_log(self) -> bytes:
        """The worker's next log (stderr) line; b"" once it has ended."""
        ...

    def end_input(self) -> None:
        """No more requests: the worker leaves its loop and exits."""
        ...

    async def wait(self) -> int:
        """The exit code, once the worker has ended."""
        ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class ProcessLink:
    """A worker that is a child process here: protocol on stdin/stdout, log on stderr. Takes
    anything shaped like asyncio's Process (the tests' in-process fakes are)."""

    def __init__(self, proc: Any) -> None:
        self.proc = proc
        self.pid: int = proc.pid
        self.machine_lost: str | None = None

    def send(self, data: bytes) -> Awaitable[None]:
        try:
            self.proc.stdin.write(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise WorkerGone(str(e)) from None
        return self._drain()

    async def _drain(self) -> None:
        try:
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as e:
            raise WorkerGone(str(e)) from None

    async def read_message(self) -> bytes:
        try:
            return await self.proc.stdout.readline()  # type: ignore[no-any-return]
        except ValueError:  # over the pipe's limit: asyncio drops the line and goes on
            raise LineDropped() from None

    async def read_log(self) -> bytes:
        try:
            return await self.proc.stderr.readline()  # type: ignore[no-any-return]
        except ValueError:  # a log line over the limit: dropped, as a message would be
            return b"[gputui] a log line over the size limit was dropped\n"

    def end_input(self) -> None:
        self.proc.stdin.close()

    async def wait(self) -> int:
        return await self.proc.wait()  # type: ignore[no-any-return]

    def terminate(self) -> None:
        try:
            self.proc.terminate()
        except ProcessLookupError:  # already reaped
            pass

    def kill(self) -> None:
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass


async def next_line(queue: asyncio.Queue[bytes]) -> bytes:
    """A line a link's own reader queued (b"" is the end, and stays the end for later reads)."""
    line = await queue.get()
    if not line:
        queue.put_nowait(b"")
    return line
