"""The parent's view of one worker: its link (worker_link.py), its stages and its requests.

A reader task follows the worker's messages; a second keeps the last lines of its log for
error reports. When the worker ends, for whatever reason, every waiter is told at once:
the load in progress and each open request get an "exit" event with the code and stderr tail.

Every wait here has a bound: a load ends when the worker has said nothing (not even its
once-a-second "alive") for SILENCE_LIMIT_S - it was stopped, or hangs - and a write to a worker
that no longer reads its input gives up after SEND_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

from gputui.core.protocol import MAX_LINE_BYTES, ProtocolError, decode_event, encode
from gputui.scheduler.worker_link import LineDropped, WorkerGone, WorkerLink

STDERR_TAIL_LINES = 30
# Quiet this long while loading = stuck. The heartbeat comes every second from its own thread;
# only a stopped process, or one holding the GIL this long, misses 30 in a row.
SILENCE_LIMIT_S = 30.0
SEND_TIMEOUT_S = 30.0


class WorkerFailed(RuntimeError):
    """The worker could not do what was asked; `info` holds the fatal message if any."""

    def __init__(self, message: str, info: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.info = info or {}


class WorkerHandle:
    _ids = itertools.count(1)

    def __init__(self, link: WorkerLink, on_exit: Callable[[WorkerHandle], None] | None = None) -> None:
        self.link = link
        self.pid = link.pid
        self.hello: dict[str, Any] | None = None
        self.imported = asyncio.Event()  # the worker's model imports are done (after hello)
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.exited = asyncio.Event()
        self.returncode: int | None = None
        self.fatal: dict[str, Any] | None = None
        self._control: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._requests: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._on_exit = on_exit
        self.last_heard = asyncio.get_running_loop().time()
        self._tasks = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._read_stderr())]

    @property
    def machine_lost(self) -> str | None:
        """Why the machine went away with this worker (a Ray node or head lost), if that is how
        it ended; a local process never loses its machine without taking us along."""
        return self.link.machine_lost

    # -- reading ------------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        try:
            while True:
                try:
                    line = await self.link.read_message()
                except LineDropped:
                    self.stderr_tail.append("[gputui] unreadable worker message: over the size limit")
                    continue
                if not line:
                    break
                self.last_heard = asyncio.get_running_loop().time()
                try:
                    msg = decode_event(line)
                except ProtocolError as e:
                    self.stderr_tail.append(f"[gputui] unreadable worker message: {e}")
                    continue
                if msg["event"] == "alive":
                    continue
                rid = msg.get("id")
                if rid is not None and str(rid) in self._requests:
                    self._requests[str(rid)].put_nowait(msg)
                elif msg["event"] in ("hello", "stage", "ready", "fatal"):
                    if msg["event"] == "fatal":
                        self.fatal = msg
                    self._control.put_nowait(msg)
                elif msg["event"] == "imported":  # its model modules are imported: really warm
                    self.imported.set()
                elif msg["event"] == "log":
                    self.stderr_tail.append(f"[worker] {msg.get('message')}")
        except (asyncio.CancelledError, ValueError):
            pass
        finally:
            await self._finish()

    async def _read_stderr(self) -> None:
        try:
            while True:
                line = await self.link.read_log()
                if not line:
                    return
                text = line.decode("utf-8", "replace").rstrip()
                if text:
                    self.stderr_tail.append(text[:500])
        except (asyncio.CancelledError, ValueError):
            return

    async def _finish(self) -> None:
        code = await self.link.wait()
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
        data = encode(msg)
        if len(data) > MAX_LINE_BYTES:  # the worker would drop it, and the caller wait for ever
            raise WorkerFailed(f"the request is {len(data) >> 20} MiB, over the {MAX_LINE_BYTES >> 20} MiB a worker "
                               "reads in one message: start a new conversation or clear this one")
        try:
            await asyncio.wait_for(self.link.send(data), SEND_TIMEOUT_S)
        except WorkerGone as e:
            raise WorkerFailed(f"worker {self.pid} closed its input ({e})") from None
        except asyncio.TimeoutError:
            raise WorkerFailed(f"worker {self.pid} has not read its input for {SEND_TIMEOUT_S:.0f} s "
                               "(stopped, or hung)") from None

    async def wait_hello(self, timeout: float) -> dict[str, Any]:
        msg = await self._next_control(timeout, "starting")
        if msg["event"] != "hello":
            raise WorkerFailed(f"worker {self.pid} did not start: {msg}")
        self.hello = msg
        return msg

    async def _next_control(self, timeout: float, what: str, silence: float | None = None) -> dict[str, Any]:
        """The next control message, within `timeout`, and (with `silence`) while the worker has
        said something, its heartbeat included, in the last `silence` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            now = loop.time()
            wait = deadline - now
            if silence is not None:
                quiet = now - self.last_heard
                if quiet >= silence:
                    raise WorkerFailed(f"worker {self.pid} stopped answering while {what}: not a word for "
                                       f"{quiet:.0f} s (stopped with SIGSTOP, or hung)")
                wait = min(wait, silence - quiet)
            if wait <= 0:
                raise WorkerFailed(f"worker {self.pid} gave no sign of life while {what} for {timeout:.0f}s")
            try:
                msg = await asyncio.wait_for(self._control.get(), wait)
                break
            except asyncio.TimeoutError:
                continue  # look again: the deadline, or the silence
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

    async def load(self, spec: dict[str, Any], on_stage: Callable[[str], None], timeout: float,
                   silence: float | None = None) -> dict[str, Any]:
        """Send the load and follow its stages to `ready`; WorkerFailed otherwise (also when a
        stage takes over `timeout`, or the worker is quiet for `silence` seconds)."""
        self.last_heard = asyncio.get_running_loop().time()
        await self.send({"op": "load", "spec": spec})
        while True:
            msg = await self._next_control(timeout, "loading", SILENCE_LIMIT_S if silence is None else silence)
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
            try:
                await self.send({**request, "op": "generate", "id": rid})
            except WorkerFailed as e:  # an answer, not an exception: the caller shows it
                yield {"event": "error", "id": rid, "message": str(e)}
                return
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
                self.link.end_input()
            except (WorkerFailed, RuntimeError, OSError):
                pass
            try:
                await asyncio.wait_for(self.exited.wait(), timeout)
            except asyncio.TimeoutError:
                self.link.terminate()
                try:
                    await asyncio.wait_for(self.exited.wait(), 2.0)
                except asyncio.TimeoutError:
                    self.link.kill()
                    await self.exited.wait()
        return self.returncode if self.returncode is not None else -1

    def kill(self) -> None:
        if self.alive:
            self.link.kill()
