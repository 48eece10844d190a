"""The worker seam: WorkerHandle speaks the protocol over any link (lines in and out, log lines,
an end), not over something shaped like a child process; a link sends at once, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from gputui.core.protocol import decode_op, encode
from gputui.scheduler.worker_handle import WorkerFailed, WorkerHandle
from gputui.scheduler.worker_link import LineDropped, ProcessLink, WorkerGone, next_line


class QueueLink:
    """A worker that is nothing but two queues (as a Ray actor is to us): no pipes, no process."""

    def __init__(self) -> None:
        self.pid = 4242
        self.machine_lost: str | None = None
        self.sent: list[dict[str, object]] = []
        self.messages: asyncio.Queue[bytes] = asyncio.Queue()
        self.log: asyncio.Queue[bytes] = asyncio.Queue()
        self.code: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.input_ended = False

    def say(self, **event: object) -> None:
        self.messages.put_nowait(encode(event))

    def end(self, code: int, why: str = "") -> None:
        if why:
            self.log.put_nowait(why.encode() + b"\n")
        self.messages.put_nowait(b"")
        self.log.put_nowait(b"")
        self.code.set_result(code)

    def send(self, data: bytes) -> Awaitable[None]:
        if self.code.done():
            raise WorkerGone("ended")
        self.sent += [decode_op(line) for line in data.splitlines()]
        return asyncio.sleep(0)

    async def read_message(self) -> bytes:
        line = await next_line(self.messages)
        if line == b"dropped\n":
            raise LineDropped()
        return line

    async def read_log(self) -> bytes:
        return await next_line(self.log)

    def end_input(self) -> None:
        self.input_ended = True
        self.end(0)

    async def wait(self) -> int:
        return await self.code

    def terminate(self) -> None:
        self.end(-15)

    def kill(self) -> None:
        self.end(-9)


async def test_a_worker_on_a_link_of_queues_loads_answers_and_stops() -> None:
    link = QueueLink()
    handle = WorkerHandle(link)
    link.say(event="hello", pid=link.pid)
    assert (await handle.wait_hello(5))["pid"] == 4242
    stages: list[str] = []
    loading = asyncio.create_task(handle.load({"kind": "x"}, stages.append, timeout=5))
    await asyncio.sleep(0.01)
    link.messages.put_nowait(b"dropped\n")  # a line over the limit: noted, and the next is read
    link.say(event="stage", stage="loading_weights")
    link.say(event="ready", timings={})
    assert (await loading)["event"] == "ready" and stages == ["loading_weights"]
    assert "over the size limit" in handle.stderr_text()

    replies = handle.generate({"messages": []}, rid="r1")
    first = asyncio.create_task(replies.__anext__())
    await asyncio.sleep(0.01)
    link.say(event="token", id="r1", text="hi")
    assert (await first)["text"] == "hi"
    link.say(event="done", id="r1", new_tokens=1)
    assert [e["event"] async for e in replies] == ["done"]

    assert await handle.stop(5) == 0
    assert [m["op"] for m in link.sent] == ["load", "generate", "shutdown"] and link.input_ended


async def test_a_link_that_ends_tells_every_waiter_with_its_last_words() -> None:
    link = QueueLink()
    handle = WorkerHandle(link)
    link.say(event="hello", pid=link.pid)
    await handle.wait_hello(5)
    replies = handle.generate({"messages": []}, rid="r1")
    waiting = asyncio.create_task(replies.__anext__())
    await asyncio.sleep(0.01)
    link.end(-1, "node n2 was lost")
    gone = await waiting
    assert gone["event"] == "exit" and gone["returncode"] == -1 and "node n2 was lost" in gone["stderr"]
    with pytest.raises(WorkerFailed, match="has exited"):
        await handle.send({"op": "cancel", "id": "r1"})


class _SlowStdin:
    """A worker that stopped reading: what is written stays in the pipe, drain never ends."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        await asyncio.Event().wait()

    def close(self) -> None:
        pass


class _Process:
    def __init__(self) -> None:
        self.pid = 99
        self.stdin = _SlowStdin()
        self.stdout = asyncio.StreamReader()
        self.stderr = asyncio.StreamReader()

    async def wait(self) -> int:
        await asyncio.Event().wait()
        return 0


async def test_a_send_is_on_its_way_even_when_its_caller_is_cancelled() -> None:
    """A cancel or a shutdown sent by a caller that is itself being cancelled (a client that
    disconnects) must still reach the worker: the link writes at once, only the wait for
    delivery is cancellable."""
    proc = _Process()
    link = ProcessLink(proc)
    delivery = link.send(b'{"op": "shutdown"}\n')
    assert proc.stdin.data == b'{"op": "shutdown"}\n'  # before anything awaits the delivery
    delivery.close()  # type: ignore[attr-defined]  # a coroutine never awaited, closed
    proc.stdin.data = b""
    handle = WorkerHandle(link)
    sending = asyncio.create_task(handle.send({"op": "cancel", "id": "r7"}))
    await asyncio.sleep(0.01)
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert decode_op(proc.stdin.data.splitlines()[0]) == {"op": "cancel", "id": "r7"}
    for task in handle._tasks:
        task.cancel()
