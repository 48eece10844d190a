"""The parent's view of one worker process: its pipes, its stages and its requests.

A reader task follows the worker's stdout; a second keeps the last lines of its stderr for
error reports. When the process ends, for whatever reason, every waiter is told at once:
the load in progress and each open request get an "exit" event with the code and stderr tail.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from gputui.core.protocol import ProtocolError, decode_event, encode

STDERR_TAIL_LINES = 30


class WorkerFailed(RuntimeError):
    """The worker could not do what was asked; `info` holds the fatal message if any."""

    def __init__(self, message: str, info: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.info = info or {}


class ProcessLike(Protocol):
    """What a launcher hands over: an asyncio subprocess or anything shaped like one."""

    pid: int
    stdin: Any
    stdout: Any
    stderr: Any

    @property
    def returncode(self) -> int | None: ...  # read-only on asyncio's Process
    async def wait(self) -> int: ...
    def kill(self) -> None: ...
    def terminate(self) -> None: ...


class WorkerHandle:
    _ids = itertools.count(1)

    def __init__(self, proc: ProcessLike, on_exit: Callable[[WorkerHandle], None] | None = None) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.hello: dict[str, Any] | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.exited = asyncio.Event()
        self.returncode: int | None = None
        self.fatal: dict[str, Any] | None = None
        self._control: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._requests: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._on_exit = on_exit
        self._tasks = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._read_stderr())]

    # -- reading ------------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        try:
            while True:
                try:
                    line = await self.proc.stdout.readline()
                except ValueError:  # a line over the pipe's limit: asyncio drops it; go on
                    self.stderr_tail.append("[gputui] unreadable worker message: over the size limit")
                    continue
                if not line:
                    break
                try:
                    msg = decode_event(line)
                except ProtocolError as e:
                    self.stderr_tail.append(f"[gputui] unreadable worker message: {e}")
                    continue
                rid = msg.get("id")
                if rid is not None and str(rid) in self._requests:
                    self._requests[str(rid)].put_nowait(msg)
                elif msg["event"] in ("hello", "stage", "ready", "fatal"):
                    if msg["event"] == "fatal":
                        self.fatal = msg
                    self._control.put_nowait(msg)
                elif msg["event"] == "log":
                    self.stderr_tail.append(f"[worker] {msg.get('message')}")
        except (asyncio.CancelledError, ValueError):
            pass
        finally:
            await self._finish()

    async def _read_stderr(self) -> None:
        try:
            while True:
                line = await self.proc.stderr.readline()
                if not line:
                    return
                text = line.decode("utf-8", "replace").rstrip()
                if text:
                    self.stderr_tail.append(text[:500])
        except (asyncio.CancelledError, ValueError):
            return

    async def _finish(self) -> None:
        code = await self.proc.wait()
        await asyncio.sleep(0)  # let the stderr reader drain what is left
        self.returncode = code
        gone = {"event": "exit", "returncode": code, "stderr": self.stderr_text()}
        self._control.put_nowait(gone)
        for q in self._requests.values():
            q.put_nowait(gone)
        self.exited.set()
        if self._on_exit is not None:
            self._on_exit(self)

    def stderr_text(self, lines: int = 8) -> str:
        return "\n".join(list(self.stderr_tail)[-lines:])

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    # -- commands -----------------------------------------------------------------------

    async def send(self, msg: dict[str, Any]) -> None:
        if not self.alive:
            raise WorkerFailed(f"worker {self.pid} has exited (code {self.returncode})")
        try:
            self.proc.stdin.write(encode(msg))
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as e:
            raise WorkerFailed(f"worker {self.pid} closed its input ({e})") from None

    async def wait_hello(self, timeout: float) -> dict[str, Any]:
        msg = await self._next_control(timeout, "starting")
        if msg["event"] != "hello":
            raise WorkerFailed(f"worker {self.pid} did not start: {msg}")
        self.hello = msg
        return msg

    async def _next_control(self, timeout: float | None, what: str) -> dict[str, Any]:
        try:
            msg = await asyncio.wait_for(self._control.get(), timeout)
        except asyncio.TimeoutError:
            raise WorkerFailed(f"worker {self.pid} gave no sign of life while {what} for {timeout:.0f}s") from None
        if msg["event"] == "exit":
            raise WorkerFailed(self._exit_text(msg), self.fatal)
        if msg["event"] == "fatal":
            raise WorkerFailed(f"failed while {msg.get('stage')}: {msg.get('message')}", msg)
        return msg

    def _exit_text(self, msg: dict[str, Any]) -> str:
        if self.fatal:
            return f"failed while {self.fatal.get('stage')}: {self.fatal.get('message')}"
        tail = msg.get("stderr") or ""
        return f"worker {self.pid} exited with code {msg.get('returncode')}" + (f": {tail.splitlines()[-1]}" if tail else "")

    async def load(self, spec: dict[str, Any], on_stage: Callable[[str], None], timeout: float) -> dict[str, Any]:
        """Send the load and follow its stages to `ready`; WorkerFailed otherwise."""
        await self.send({"op": "load", "spec": spec})
        while True:
            msg = await self._next_control(timeout, "loading")
            if msg["event"] == "stage":
                on_stage(str(msg.get("stage")))
            elif msg["event"] == "ready":
                return msg

    def new_request_id(self) -> str:
        return f"r{next(self._ids)}"

    async def generate(self, request: dict[str, Any], rid: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Stream a request's events: token..., then done | error | exit."""
        rid = rid or self.new_request_id()
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._requests[rid] = q
        try:
            await self.send({**request, "op": "generate", "id": rid})
            while True:
                msg = await q.get()
                yield msg
                if msg["event"] in ("done", "error", "exit"):
                    return
        finally:
            self._requests.pop(rid, None)

    async def cancel(self, rid: str) -> None:
        """Ask the worker to stop that request; it stops within one token."""
        if self.alive and rid in self._requests:
            await self.send({"op": "cancel", "id": rid})

    async def stop(self, timeout: float = 5.0) -> int:
        """Ask, wait, terminate, kill: the worker is gone when this returns."""
        if self.alive:
            try:
                await self.send({"op": "shutdown"})
                self.proc.stdin.close()
            except (WorkerFailed, RuntimeError, OSError):
                pass
            try:
                await asyncio.wait_for(self.exited.wait(), timeout)
            except asyncio.TimeoutError:
                self.proc.terminate()
                try:
                    await asyncio.wait_for(self.exited.wait(), 2.0)
                except asyncio.TimeoutError:
                    self.proc.kill()
                    await self.exited.wait()
        return self.returncode if self.returncode is not None else -1

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
