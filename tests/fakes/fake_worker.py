"""In-process fake workers that speak the real protocol over real asyncio streams.

They let scheduler tests run scenarios in milliseconds: a worker that loads, one that dies
mid-load, one that crashes while replying. Memory is booked on a SimulatedServer, as the
simulated launcher does for real CPU workers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from gputui.core.protocol import decode_op, encode
from gputui.scheduler.launcher import read_costs_here
from gputui.scheduler.worker_handle import WorkerHandle
from gputui.scheduler.worker_link import ProcessLink

_pids = itertools.count(50_000)


@dataclass
class Behaviour:
    load_delay: float = 0.0
    die_in_stage: str | None = None  # exit without a word during this stage
    fatal_in_stage: str | None = None  # report fatal during this stage, then exit
    fatal_message: str = "CUDA out of memory. Tried to allocate 2.00 GiB"
    reply: str = "hello there"
    token_delay: float = 0.0
    die_after_tokens: int | None = None
    hold_bytes: int = 0  # memory the worker itself takes on its GPU during load
    device_assert_on_generate: bool = False  # as the real worker does after one: report, exit
    stall_in_stage: str | None = None  # go silent in this stage, as a SIGSTOPped worker does
    stall_after_tokens: int | None = None  # go silent mid-reply
    log: list[str] = field(default_factory=list)


class _Stdin:
    def __init__(self, proc: FakeProcess) -> None:
        self.proc = proc
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed or self.proc.returncode is not None:
            raise BrokenPipeError("fake worker gone")
        for line in data.splitlines():
            self.proc.inbox.put_nowait(line)

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def close(self) -> None:
        self.closed = True
        self.proc.inbox.put_nowait(b"")


class FakeProcess:
    def __init__(self, behaviour: Behaviour, server: Any = None) -> None:
        self.pid = next(_pids)
        self.returncode: int | None = None
        self.b = behaviour
        self.server = server
        self.stdout = asyncio.StreamReader()
        self.stderr = asyncio.StreamReader()
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.stdin = _Stdin(self)
        self._done = asyncio.Event()
        self.cancelled: set[str] = set()
        self.gpu_uuid: str | None = None
        self.spec: dict[str, Any] = {}  # what the scheduler asked this worker to load
        self._jobs: set[asyncio.Task[None]] = set()
        self._task = asyncio.create_task(self._main())

    def _send(self, msg: dict[str, Any]) -> None:
        if self.returncode is None:
            self.stdout.feed_data(encode(msg))

    def _exit(self, code: int) -> None:
        if self.returncode is not None:
            return
        self.returncode = code
        if self.server is not None:
            self.server.release(self.pid)  # the driver frees a dead process's memory
        self.stderr.feed_data(f"fake worker {self.pid} exiting with {code}\n".encode())
        self.stdout.feed_eof()
        self.stderr.feed_eof()
        self._done.set()
        for task in (self._task, *self._jobs):  # a dead process runs nothing (a stalled one too)
            if task is not asyncio.current_task():
                task.cancel()

    async def _main(self) -> None:
        self._send({"event": "hello", "pid": self.pid})
        while self.returncode is None:
            line = await self.inbox.get()
            if not line:
                self._exit(0)
                return
            msg = decode_op(line)
            self.b.log.append(msg["op"])
            if msg["op"] == "shutdown":
                self._exit(0)
            elif msg["op"] == "load":
                await self._load(msg["spec"])
            elif msg["op"] == "cancel":
                self.cancelled.add(msg["id"])
            elif msg["op"] == "generate":
                job = asyncio.create_task(self._generate(msg))
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)

    async def _load(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.gpu_uuid = (spec.get("gpu_uuids") or [None])[0]
        for stage in ("warming_cublas", "loading_weights", "warm_up"):
            self._send({"event": "stage", "stage": stage})
            await asyncio.sleep(self.b.load_delay)
            if stage == "loading_weights" and self.server is not None and self.b.hold_bytes:
                try:
                    self.server.allocate(self.gpu_uuid, self.pid, self.b.hold_bytes)
                except MemoryError as e:
                    self._send({"event": "fatal", "stage": stage, "message": f"OutOfMemoryError: {e}", "oom": True})
                    self._exit(3)
                    return
            if stage == self.b.stall_in_stage:
                await asyncio.Event().wait()  # never again a word, until killed
            if stage == self.b.die_in_stage:
                self._exit(-9)
                return
            if stage == self.b.fatal_in_stage:
                self._send({"event": "fatal", "stage": stage, "message": self.b.fatal_message, "oom": True})
                self._exit(3)
                return
        self._send({"event": "ready", "timings": {}, "weight_bytes": 1})

    async def _generate(self, msg: dict[str, Any]) -> None:
        rid = msg["id"]
        if self.b.device_assert_on_generate:
            text = "RuntimeError: CUDA error: device-side assert triggered"
            self._send({"event": "error", "id": rid, "message": text})
            self._send({"event": "fatal", "stage": "generate", "message": text, "device_assert": True})
            self._exit(3)
            return
        n = 0
        for word in self.b.reply.split(" "):
            if rid in self.cancelled:
                break
            if self.b.die_after_tokens is not None and n >= self.b.die_after_tokens:
                self._exit(-9)
                return
            if self.b.stall_after_tokens is not None and n >= self.b.stall_after_tokens:
                await asyncio.Event().wait()
            self._send({"event": "token", "id": rid, "text": word + " "})
            n += 1
            await asyncio.sleep(self.b.token_delay)
        self._send({"event": "done", "id": rid, "new_tokens": n,
                    "finish": "cancelled" if rid in self.cancelled else "stop", "echo": json.dumps(msg)[:200]})

    async def wait(self) -> int:
        await self._done.wait()
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        self._exit(-9)

    def terminate(self) -> None:
        self._exit(-15)


class FakeLauncher:
    """Hands out fake workers; `behaviours` are used in order, then the default."""

    device = "cuda"

    def __init__(self, server: Any, behaviours: list[Behaviour] | None = None) -> None:
        self.server = server
        self.behaviours = list(behaviours or [])
        self.started: list[FakeProcess] = []

    async def start_worker(self, kind: str = "chatglm3", gpu_uuids: list[str] | None = None) -> WorkerHandle:
        b = self.behaviours.pop(0) if self.behaviours else Behaviour()
        proc = FakeProcess(b, self.server)
        self.started.append(proc)
        handle = WorkerHandle(ProcessLink(proc))
        await handle.wait_hello(5)
        return handle

    async def read_costs(self, request: Any, dtype: str) -> Any:
        return await read_costs_here(request, dtype)  # the real preflight: only the worker is fake

    def warm_spares(self, kinds: object) -> None:
        pass  # fake workers start at once

    def placed(self, handle: WorkerHandle, gpu_uuid: str, n_bytes: int) -> None:
        self.server.allocate(gpu_uuid, handle.pid, n_bytes)

    async def close(self) -> None:
        for p in self.started:
            p.kill()

    def live_pids(self) -> set[int]:
        return {p.pid for p in self.started if p.returncode is None}

    def spare_pids(self) -> set[int]:
        return set()

    def started_pids(self) -> set[int]:
        return {p.pid for p in self.started}
