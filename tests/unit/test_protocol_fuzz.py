"""Fuzzing the worker protocol: random bytes and hostile JSON never crash a decoder or a
reader; each bad line is one clear ProtocolError, and the good lines around it still arrive."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gputui.core.protocol import (
    EVENTS,
    FIELD_TYPES,
    OPS,
    ProtocolError,
    decode_event,
    decode_op,
    encode,
)
from gputui.scheduler.worker_handle import WorkerHandle
from gputui.scheduler.worker_link import ProcessLink

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
names = st.sampled_from(sorted(OPS | EVENTS)) | st.text(max_size=10)
fields = st.sampled_from(sorted({f for d in FIELD_TYPES.values() for f in d})) | st.text(max_size=8)
messages = st.builds(lambda name, key, extra: {key: name, **extra},
                     names, st.sampled_from(["op", "event"]), st.dictionaries(fields, json_values, max_size=5))


def check(decode, line: bytes) -> None:  # noqa: ANN001
    try:
        msg = decode(line)
    except ProtocolError as e:
        assert "\n" not in str(e) and len(str(e)) < 300
        return
    assert isinstance(msg, dict)
    name = msg.get("op", msg.get("event"))
    for field, types in FIELD_TYPES.get(name, {}).items():
        assert field not in msg or isinstance(msg[field], types)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(line: bytes) -> None:
    check(decode_op, line)
    check(decode_event, line)


@settings(max_examples=1000, deadline=None)
@given(messages)
def test_hostile_json_objects(msg: dict) -> None:
    line = json.dumps(msg).encode()
    check(decode_op, line)
    check(decode_event, line)


def test_deep_nesting_and_huge_lines_are_one_error() -> None:
    for line in (b"[" * 100_000 + b"]" * 100_000, b'{"op": "ping", "x": "' + b"a" * (33 << 20) + b'"}'):
        for decode in (decode_op, decode_event):
            try:
                decode(line)
            except ProtocolError as e:
                assert "\n" not in str(e)


class _Proc:
    """A worker that writes what the test says on stdout, then stays up."""

    def __init__(self, lines: list[bytes]) -> None:
        self.pid, self.returncode = 4242, None
        self.stdout, self.stderr = asyncio.StreamReader(limit=1 << 16), asyncio.StreamReader()
        for line in lines:
            self.stdout.feed_data(line)
        self.stdin = None
        self._done = asyncio.Event()

    async def wait(self) -> int:
        await self._done.wait()
        return 0

    def kill(self) -> None:
        self.returncode = -9
        self.stdout.feed_eof()
        self.stderr.feed_eof()
        self._done.set()

    terminate = kill


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" ") + b"\n")
                | messages.map(lambda m: json.dumps(m).encode() + b"\n"), max_size=8))
def test_a_reader_fed_garbage_still_hears_the_worker(garbage: list[bytes]) -> None:
    async def run() -> None:
        hello = encode({"event": "hello", "pid": 4242})
        ready = encode({"event": "ready", "timings": {}, "weight_bytes": 1})
        clean = [g for g in garbage if b'"hello"' not in g and b'"ready"' not in g and b'"fatal"' not in g
                 and b'"stage"' not in g]
        proc = _Proc([*clean, hello, *clean, ready])
        h = WorkerHandle(ProcessLink(proc))
        assert (await h.wait_hello(2))["pid"] == 4242
        assert (await h._next_control(2, "loading"))["event"] == "ready"
        assert h.alive
        proc.kill()
        await h.exited.wait()

    asyncio.run(run())


def test_a_line_over_the_pipe_limit_is_dropped_and_reading_goes_on() -> None:
    async def run() -> None:
        proc = _Proc([b"x" * (1 << 17) + b"\n", encode({"event": "hello", "pid": 4242})])
        h = WorkerHandle(ProcessLink(proc))
        assert (await h.wait_hello(2))["pid"] == 4242
        assert "over the size limit" in h.stderr_text()
        proc.kill()
        await h.exited.wait()

    asyncio.run(run())


def test_a_killed_ray_actor_is_a_crashed_worker_and_only_a_dead_node_is_a_lost_node() -> None:
    """Issue 31, N11: killing one actor was reported as "node a was lost" (its message has
    "died" and a node's address in it). The messages are Ray's own (ActorDiedErrorContext)."""
    from gputui.cluster.launcher import says_node_died

    killed = ("The actor died unexpectedly before finishing this task.\n\tclass_name: WorkerActor\n\tactor_id: 1f\n"
              "\tpid: 4242\n\tip: 10.0.0.2\nThe actor is dead because its worker process has died. Worker exit "
              "type: SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a connection error code 2. "
              "The node's raylet may have crashed")
    node = ("The actor died unexpectedly before finishing this task.\n\tclass_name: WorkerActor\n\tip: 10.0.0.2\n"
            "The actor is dead because its node has died. Node Id: 5e2b\n")
    assert not says_node_died(killed) and says_node_died(node)
