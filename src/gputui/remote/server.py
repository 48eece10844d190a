"""The server: one client (the scheduler's LocalClient) served on a Unix socket to every
process of the same user.

Security: the socket lives in the user's private runtime folder (0700), is itself 0600, and
each connection's peer uid is checked (SO_PEERCRED): another user is told so and dropped, even
if the file modes were loosened. A line that breaks the protocol gets one error line and the
connection is closed; nothing a client sends can end the server.

Every request on a connection runs on its own (ids tell the answers apart): a dashboard's
unload of a loading model, its GPU readings and its chats never wait behind that load. Chat
requests run as tasks of the server, not of the connection: a client that detaches or dies
mid-reply changes nothing - the reply completes and is journaled as if it were still there.

Bounded: a line is assembled here from small reads, so a client that sends a huge or endless
line holds at most MAX_LINE_BYTES (and all connections together PARTIAL_BUDGET_BYTES) until the
line is refused - on its own request id, the connection kept; a line must keep arriving
(LINE_STALL_S), a connection with nothing in flight is closed after IDLE_S, and a connection
has at most MAX_IN_FLIGHT requests under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gputui.api.chat import BadChatRequest, ChatEvent, ChatRequest
from gputui.api.client import ChatStream, Client, CommandRefused
from gputui.core import generation
from gputui.core.profiles import Profile, ProfileError
from gputui.core.requests import ModelRequest
from gputui.core.snapshot import mark_ours, snapshot_to_json
from gputui.hardware.base import GpuTelemetry
from gputui.remote import wire

READ_CHUNK = 1 << 16
PARTIAL_BUDGET_BYTES = 256 << 20  # every connection's unfinished lines together
LINE_STALL_S = 60.0  # a line that stops arriving midway
IDLE_S = 600.0  # a connection with no request under way and nothing sent
MAX_IN_FLIGHT = 64
HELLO_TIMEOUT_S = 30.0
CLOSE_GRACE_S = 2.0  # answers still being written when the server stops
_ID_PREFIX = re.compile(rb'^\s*\{\s*"id"\s*:\s*(\d{1,18})\s*[,}]')

Send = Callable[[dict[str, Any]], Any]


def peer_uid(writer: asyncio.StreamWriter) -> int | None:
    return wire.peer_uid(writer.get_extra_info("socket"))


@dataclass
class _Oversize:
    """A line refused for its size; the request id, when its start names one."""

    rid: int | None
    size: int


@dataclass
class _Connection:
    name: str
    commands: set[asyncio.Task[Any]] = field(default_factory=set)  # answers and chats under way
    streams: set[asyncio.Task[Any]] = field(default_factory=set)  # event streams (end with it)

    @property
    def busy(self) -> bool:
        return bool(self.commands or self.streams)

    def track(self, task: asyncio.Task[Any], stream: bool) -> None:
        tasks = self.streams if stream else self.commands
        tasks.add(task)
        task.add_done_callback(tasks.discard)


class Server:
    def __init__(self, client: Client, *, telemetry: GpuTelemetry | None = None, demo: bool = False,
                 on_shutdown: Callable[[], None] | None = None, version: str = "0") -> None:
        self.client = client
        self.api: dict[str, Any] | None = None  # where the OpenAI-compatible API listens (serve --api)
        self.telemetry = telemetry  # what `snapshot` reads (the --demo dashboard shows the server's GPUs)
        self.demo = demo
        self.version = version
        self.started = time.time()
        self._on_shutdown = on_shutdown
        self._chats: dict[str, ChatStream] = {}  # by "<connection>:<request id>", for cancel
        self._tasks: set[asyncio.Task[Any]] = set()  # chats (they outlive their connection)
        self._server: asyncio.AbstractServer | None = None
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._answers: set[asyncio.Task[Any]] = set()
        self.partial_bytes = 0  # bytes of unfinished lines held now, every connection together

    async def listen(self, path: Path) -> None:
        """Bind the socket (0600, made so from the start, not after) and serve."""
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(path), limit=READ_CHUNK)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)

    async def close(self) -> None:
        """Stop listening, let answers being written go out (the reply to `shutdown` above all),
        then end every connection (each handler then returns by itself)."""
        if self._server is not None:
            self._server.close()
        answers = [t for t in self._answers if t is not asyncio.current_task()]
        if answers:
            await asyncio.wait(answers, timeout=CLOSE_GRACE_S)
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0.05)

    def info(self) -> dict[str, Any]:
        return {"protocol": wire.PROTOCOL, "version": self.version, "pid": os.getpid(), "started": self.started,
                "demo": self.demo, "device": self.client.device,
                # what its GPU readings come from: "nvml" (this machine's), "simulated", "ray" (a cluster's)
                "telemetry": self.telemetry.backend if self.telemetry is not None else None,
                "api": self.api}

    # -- one connection -----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = _Connection(f"c{self.connections}")
        self._writers.add(writer)
        lock = asyncio.Lock()  # one writer at a time on this connection

        async def send(msg: dict[str, Any]) -> bool:
            async with lock:
                try:
                    writer.write(wire.encode(msg))
                    await writer.drain()
                    return True
                except (ConnectionError, RuntimeError, ValueError):
                    return False

        buf = bytearray()
        try:
            uid = peer_uid(writer)
            if uid is not None and uid != os.getuid():
                await send({"error": {"type": "refused", "message": f"this gputui server belongs to uid {os.getuid()}; "
                                                                    f"you are uid {uid}: start your own with `gputui`"}})
                return
            if not await self._handshake(reader, buf, send):
                return
            while True:
                line = await self._read_line(reader, buf, conn)
                if line is None:
                    break  # the client is done sending (EOF, or a half-close): answer what it asked
                if isinstance(line, _Oversize):
                    err = {"type": "too_large", "message": f"a request of {line.size} bytes or more is over the "
                                                           f"{wire.MAX_LINE_BYTES} byte limit (a chat that long: "
                                                           "/clear, or start a new conversation)"}
                    if line.rid is None:
                        await send({"error": err})
                        return
                    await send({"id": line.rid, "error": err})
                    continue
                try:
                    rid, op, args = wire.request(wire.decode(line))
                except wire.WireError as e:
                    await send({"error": {"type": "bad_request", "message": str(e)}})
                    return
                if len(conn.commands) + len(conn.streams) >= MAX_IN_FLIGHT:
                    await send({"id": rid, "error": {"type": "busy", "message": f"over {MAX_IN_FLIGHT} requests under "
                                                                             "way on one connection"}})
                    continue
                why = check_args(op, args)
                if why:
                    await send({"id": rid, "error": {"type": "bad_request", "message": f"{op}: {why}"}})
                    continue
                if op == "events":
                    conn.track(asyncio.create_task(self._events(rid, args, send)), stream=True)
                elif op == "chat":
                    conn.track(asyncio.create_task(self._chat(conn.name, rid, args, send)), stream=False)
                else:
                    task = asyncio.create_task(self._answer(conn.name, rid, op, args, send))
                    self._answers.add(task)
                    task.add_done_callback(self._answers.discard)
                    conn.track(task, stream=False)
            if conn.commands:  # a half-closed client still reads its answers
                await asyncio.wait(list(conn.commands))
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.partial_bytes -= len(buf)
            buf.clear()  # not left to the collector: a cycle could keep 32 MiB alive
            for task in conn.streams:  # event streams end with the connection; chats run on (see _chat)
                task.cancel()
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_line(self, reader: asyncio.StreamReader, buf: bytearray, conn: _Connection | None
                         ) -> bytes | _Oversize | None:
        """The next line, assembled from small reads; None at the end of input. A line over the
        limit (or over what all connections may hold together) is read to its end and dropped."""
        skipping: _Oversize | None = None
        while True:
            end = buf.find(b"\n")
            if end >= 0:
                if skipping is None and end + 1 > wire.MAX_LINE_BYTES:
                    skipping = _Oversize(_request_id(buf), 0)
                line = bytes(buf[:end + 1]) if skipping is None else b""
                del buf[:end + 1]
                self.partial_bytes -= end + 1
                if skipping is not None:
                    skipping.size += end + 1
                    return skipping
                return line
            if skipping is None and (len(buf) > wire.MAX_LINE_BYTES or self.partial_bytes > PARTIAL_BUDGET_BYTES):
                skipping = _Oversize(_request_id(buf), 0)
            if skipping is not None:
                skipping.size += len(buf)
                self.partial_bytes -= len(buf)
                buf.clear()
            # always a finite wait: a connection busy when the wait began (a chat streaming) may be
            # idle by the time it ends, and is then closed like any idle one
            timeout = LINE_STALL_S if (buf or skipping) else IDLE_S
            try:
                chunk = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
            except asyncio.TimeoutError:
                if conn is not None and conn.busy and not buf and skipping is None:
                    continue
                raise ConnectionError("timed out") from None
            if not chunk:
                return None
            buf += chunk
            self.partial_bytes += len(chunk)

    async def _handshake(self, reader: asyncio.StreamReader, buf: bytearray, send: Send) -> bool:
        try:
            line = await asyncio.wait_for(self._read_line(reader, buf, None), HELLO_TIMEOUT_S)
            if not isinstance(line, bytes):
                raise wire.WireError("no hello")
            hello = wire.decode(line).get("hello")
        except (wire.WireError, asyncio.TimeoutError, ValueError, ConnectionError):
            await send({"error": {"type": "bad_request", "message": "say hello first: {\"hello\": {\"protocol\": 1}}"}})
            return False
        theirs = hello.get("protocol") if isinstance(hello, dict) else None
        if theirs != wire.PROTOCOL:
            await send({"error": {"type": "version", "message": wire.version_mismatch(wire.PROTOCOL, theirs, "client")}})
            return False
        return bool(await send({"hello": self.info()}))

    async def _answer(self, conn: str, rid: int, op: str, args: dict[str, Any], send: Send) -> None:
        try:
            result = await self._call(conn, op, args)
        except CommandRefused as e:
            await send({"id": rid, "error": {"type": "refused", "message": str(e)}})
        except (KeyError, TypeError, ValueError, ProfileError) as e:
            await send({"id": rid, "error": {"type": "bad_request", "message": f"{op}: {type(e).__name__}: {e}"}})
        except Exception as e:  # noqa: BLE001 - one command's bug is its answer; the server goes on
            await send({"id": rid, "error": {"type": "internal", "message": f"{op}: {type(e).__name__}: {e}"}})
        else:
            # the newest event's number: the client reads its own writes once it has seen it
            await send({"id": rid, "result": result, "seq": self.client.last_seq})
            if op == "shutdown" and self._on_shutdown is not None:
                # only once the answer is out: the client then sees the server go, not a cut reply
                self._on_shutdown()

    async def _call(self, conn: str, op: str, args: dict[str, Any]) -> Any:
        c = self.client
        if op == "info":
            return self.info()
        if op == "snapshot":
            if self.telemetry is None:
                raise CommandRefused("this server does not share its GPU readings")
            snap = await asyncio.to_thread(self.telemetry.snapshot)
            return snapshot_to_json(mark_ours(snap, dict(c.worker_pids())))
        if op == "models":
            return [v.to_json() for v in c.models()]
        if op == "worker_pids":
            return {str(pid): name for pid, name in c.worker_pids().items()}
        if op == "load":
            return (await c.load(ModelRequest.from_json(args["request"]))).to_json()
        if op == "unload":
            return (await c.unload(str(args["name"]))).to_json()
        if op == "move":
            return (await c.move(str(args["name"]), str(args["gpu"]))).to_json()
        if op == "reload":
            return (await c.reload(str(args["name"]))).to_json()
        if op == "plan_profile":
            return [line.to_json() for line in await c.plan_profile(Profile.from_json(args["profile"]))]
        if op == "apply_profile":
            return [step.to_json() for step in await c.apply_profile(Profile.from_json(args["profile"]))]
        if op == "current_profile":
            return (await c.current_profile(str(args["name"]))).to_json()
        if op == "cancel":
            chat = self._chats.get(f"{conn}:{args.get('chat')}")
            if chat is not None:
                await chat.cancel()
            return None
        if op == "shutdown":
            return None  # _answer ends the server once this answer is out
        raise ValueError(f"no such op {op!r}")

    async def _events(self, rid: int, args: dict[str, Any], send: Send) -> None:
        async for ev in self.client.events(int(args.get("since") or 0)):
            if not await send({"id": rid, "item": ev.to_json()}):
                return
        await send({"id": rid, "end": True})

    async def _chat(self, conn: str, rid: int, args: dict[str, Any], send: Send) -> None:
        """The chat runs in a task of the server: if this connection goes, the reply still
        completes (and is journaled); we only stop forwarding it."""
        request = dataclasses.replace(ChatRequest.from_json(args["request"]), asker=f"connection {conn}")
        stream = self.client.chat(str(args["name"]), request)
        key = f"{conn}:{rid}"
        self._chats[key] = stream
        items: asyncio.Queue[ChatEvent | None] = asyncio.Queue()

        async def run() -> None:
            try:
                async for ev in _iterate(stream):
                    items.put_nowait(ev)
            finally:
                items.put_nowait(None)
                self._chats.pop(key, None)

        task = asyncio.create_task(run(), name=f"gputui-chat-{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        forwarding = True
        while True:
            ev = await items.get()
            if ev is None:
                break
            if forwarding and not await send({"id": rid, "item": ev.to_json()}):
                forwarding = False  # the client is gone; the chat goes on without it
        if forwarding:
            await send({"id": rid, "end": True})


def _request_id(line: bytearray) -> int | None:
    """The id at the start of a request line (our clients write it first), to refuse an
    over-size request on its own id without parsing megabytes."""
    m = _ID_PREFIX.match(line[:64])
    return int(m.group(1)) if m else None


def check_args(op: str, args: dict[str, Any]) -> str | None:
    """Why a request's arguments cannot be used (checked before anything runs), or None. The
    same checks as profiles and `/set`: a value every reply would fail on is refused here."""
    if op == "events":
        since = args.get("since", 0)
        if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
            return "since must be a whole number >= 0"
    if op in ("unload", "reload", "current_profile", "move") and not isinstance(args.get("name"), str):
        return "name must be text"
    if op == "move" and not isinstance(args.get("gpu"), str):
        return "gpu must be text"
    if op == "cancel" and not isinstance(args.get("chat"), int):
        return "chat must be a request id"
    if op == "load" and not isinstance(args.get("request"), dict):
        return "request must be an object"
    if op == "load":
        return _check_generation(args["request"].get("generation") or {}, "generation")
    if op == "chat":
        request = args.get("request")
        if not isinstance(args.get("name"), str) or not isinstance(request, dict):
            return "chat needs a name and a request"
        return check_chat_request(request)
    return None


def check_chat_request(request: dict[str, Any]) -> str | None:
    try:
        parsed = ChatRequest.from_json(request)
    except BadChatRequest as e:
        return str(e)
    return _check_generation(dict(parsed.params), "params")


def _check_generation(params: Any, what: str) -> str | None:
    if not isinstance(params, dict):
        return f"{what} must be an object"
    for key, value in params.items():
        if key in generation.KEYS:
            why = generation.check(key, value)
        elif key in WORKER_PARAMS:
            why = WORKER_PARAMS[key](value)
        else:
            why = f"unknown setting {str(key)[:40]!r}"
        if why:
            return f"{key}: {why}" if key in WORKER_PARAMS else why
    return None


def _whole(lo: int, hi: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
        return None if ok else f"a whole number from {lo} to {hi}"
    return check


def _flag(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


# what a worker takes besides the user-facing settings (gputui.core.generation)
WORKER_PARAMS: dict[str, Callable[[Any], str | None]] = {"seed": _whole(0, (1 << 63) - 1), "ignore_stop": _flag}


async def _iterate(stream: ChatStream) -> AsyncIterator[ChatEvent]:
    async for ev in stream:
        yield ev
