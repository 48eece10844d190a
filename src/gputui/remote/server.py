"""The server: one client (the scheduler's LocalClient) served on a Unix socket to every
process of the same user.

Security: the socket lives in the user's private runtime folder (0700), is itself 0600, and
each connection's peer uid is checked (SO_PEERCRED): another user is told so and dropped, even
if the file modes were loosened. A line that breaks the protocol gets one error line and the
connection is closed; nothing a client sends can end the server.

Chat requests run as tasks of the server, not of the connection: a client that detaches or
dies mid-reply changes nothing - the reply completes and is journaled (by the client's chat
stream) as if it were still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from gputui.api.client import ChatStream, Client, CommandRefused
from gputui.core.profiles import Profile, ProfileError
from gputui.core.requests import ModelRequest
from gputui.core.snapshot import mark_ours, snapshot_to_json
from gputui.hardware.base import GpuTelemetry
from gputui.remote import wire


def peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class Server:
    def __init__(self, client: Client, *, telemetry: GpuTelemetry | None = None, demo: bool = False,
                 on_shutdown: Callable[[], None] | None = None, version: str = "0") -> None:
        self.client = client
        self.telemetry = telemetry  # what `snapshot` reads (the --demo dashboard shows the server's GPUs)
        self.demo = demo
        self.version = version
        self.started = time.time()
        self._on_shutdown = on_shutdown
        self._chats: dict[str, ChatStream] = {}  # by "<connection>:<request id>", for cancel
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.AbstractServer | None = None
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def listen(self, path: Path) -> None:
        """Bind the socket (0600, made so from the start, not after) and serve."""
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(path), limit=wire.MAX_LINE_BYTES)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)

    async def close(self) -> None:
        """Stop listening and end every connection (each handler then returns by itself: a
        handler cancelled at the loop's end is logged by asyncio as an error)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0.05)

    def info(self) -> dict[str, Any]:
        return {"protocol": wire.PROTOCOL, "version": self.version, "pid": os.getpid(), "started": self.started,
                "demo": self.demo, "device": self.client.device}

    # -- one connection -----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = f"c{self.connections}"
        self._writers.add(writer)
        lock = asyncio.Lock()  # one writer at a time on this connection
        streams: set[asyncio.Task[Any]] = set()

        async def send(msg: dict[str, Any]) -> bool:
            async with lock:
                try:
                    writer.write(wire.encode(msg))
                    await writer.drain()
                    return True
                except (ConnectionError, RuntimeError):
                    return False

        try:
            uid = peer_uid(writer)
            if uid is not None and uid != os.getuid():
                await send({"error": {"type": "refused", "message": f"this gputui server belongs to uid {os.getuid()}; "
                                                                    f"you are uid {uid}: start your own with `gputui`"}})
                return
            if not await self._handshake(reader, send):
                return
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await send({"error": {"type": "bad_request", "message": f"a line over {wire.MAX_LINE_BYTES} bytes"}})
                    return
                if not line:
                    return
                try:
                    rid, op, args = wire.request(wire.decode(line))
                except wire.WireError as e:
                    await send({"error": {"type": "bad_request", "message": str(e)}})
                    return
                if op == "chat" and not (isinstance(args.get("name"), str) and isinstance(args.get("request"), dict)):
                    await send({"id": rid, "error": {"type": "bad_request", "message": "chat needs a name and a request"}})
                    continue
                if op in wire.STREAMS:
                    task = asyncio.create_task(self._stream(conn, rid, op, args, send))
                    streams.add(task)
                    task.add_done_callback(streams.discard)
                else:
                    await self._answer(conn, rid, op, args, send)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            for task in streams:  # event streams end with the connection; chats run on (see _chat)
                task.cancel()
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handshake(self, reader: asyncio.StreamReader, send: Callable[[dict[str, Any]], Any]) -> bool:
        try:
            hello = wire.decode(await asyncio.wait_for(reader.readline(), 30)).get("hello")
        except (wire.WireError, asyncio.TimeoutError, ValueError):
            await send({"error": {"type": "bad_request", "message": "say hello first: {\"hello\": {\"protocol\": 1}}"}})
            return False
        theirs = hello.get("protocol") if isinstance(hello, dict) else None
        if theirs != wire.PROTOCOL:
            await send({"error": {"type": "version", "message": wire.version_mismatch(wire.PROTOCOL, theirs, "client")}})
            return False
        return bool(await send({"hello": self.info()}))

    async def _answer(self, conn: str, rid: int, op: str, args: dict[str, Any],
                      send: Callable[[dict[str, Any]], Any]) -> None:
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
            await send({"id": rid, "result": result, "seq": getattr(self.client, "last_seq", None)})

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
            if self._on_shutdown is not None:
                asyncio.get_running_loop().call_soon(self._on_shutdown)
            return None
        raise ValueError(f"no such op {op!r}")

    async def _stream(self, conn: str, rid: int, op: str, args: dict[str, Any],
                      send: Callable[[dict[str, Any]], Any]) -> None:
        try:
            if op == "events":
                async for ev in self.client.events(int(args.get("since") or 0)):
                    if not await send({"id": rid, "item": ev.to_json()}):
                        return
            else:
                await self._chat(conn, rid, args, send)
            await send({"id": rid, "end": True})
        except (KeyError, TypeError, ValueError) as e:
            await send({"id": rid, "error": {"type": "bad_request", "message": f"{op}: {e}"}})

    async def _chat(self, conn: str, rid: int, args: dict[str, Any], send: Callable[[dict[str, Any]], Any]) -> None:
        """The chat runs in a task of the server: if this connection goes, the reply still
        completes (and is journaled); we only stop forwarding it."""
        request = args["request"]
        if not isinstance(request, dict):
            raise ValueError("request must be an object")
        stream = self.client.chat(str(args["name"]), request)
        key = f"{conn}:{rid}"
        self._chats[key] = stream
        items: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

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
                return
            if forwarding and not await send({"id": rid, "item": ev}):
                forwarding = False  # the client is gone; the chat goes on without it


async def _iterate(stream: ChatStream) -> AsyncIterator[dict[str, Any]]:
    async for ev in stream:
        yield ev
