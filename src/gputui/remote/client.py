"""RemoteClient: gputui.api.Client over the server's socket, for the dashboard, `gputui chat`,
`ps`, `stop` and scripts.

Reads (models, model, worker_pids) answer from a local copy that an events subscription keeps
current, so they are as immediate as in-process ones; commands and streams go over the socket.
If the server goes away, every waiting call fails with one line that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gputui.api.chat import ChatEvent, ChatRequest
from gputui.api.client import CommandRefused
from gputui.api.views import Event, ModelView, PlanLine, ProfileStep, UnloadResult
from gputui.core.profiles import Profile
from gputui.core.requests import ModelRequest
from gputui.core.snapshot import ServerSnapshot, snapshot_from_json
from gputui.remote import wire


class ServerGone(CommandRefused):
    """The server closed the connection (it stopped, or was killed)."""


class ServerError(CommandRefused):
    """The server refused the conversation itself (another uid, another protocol version), or
    is not answering; `mismatch`: it speaks another protocol (`gputui stop --force` ends it)."""

    def __init__(self, message: str, mismatch: bool = False) -> None:
        super().__init__(message)
        self.mismatch = mismatch


class RemoteChatStream:
    def __init__(self, client: RemoteClient, name: str, request: ChatRequest) -> None:
        self._client, self._name, self._request = client, name, request
        self._rid: int | None = None

    def __aiter__(self) -> AsyncIterator[ChatEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[ChatEvent]:
        try:
            async for item in self._client._stream("chat", {"name": self._name, "request": self._request.to_json()},
                                                   on_id=self._set_rid):
                yield ChatEvent.from_json(item)
        except CommandRefused as e:
            yield ChatEvent("error", str(e))

    def _set_rid(self, rid: int) -> None:
        self._rid = rid

    async def cancel(self) -> None:
        if self._rid is not None:
            await self._client._call("cancel", {"chat": self._rid})


class RemoteClient:
    device = "cuda"  # replaced by what the server says in its hello

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hello: dict[str, Any]) -> None:
        self._reader, self._writer = reader, writer
        self.server = hello
        self.device = str(hello.get("device") or "cuda")
        self._next = 0
        self._waiting: dict[int, asyncio.Queue[dict[str, Any] | None]] = {}
        self._views: Mapping[str, ModelView] = MappingProxyType({})
        self._pids: Mapping[int, str] = MappingProxyType({})
        self._lock = asyncio.Lock()
        self._reader_task = asyncio.create_task(self._read(), name="gputui-remote-reader")
        self._follow: asyncio.Task[None] | None = None
        self._seen = 0  # the newest event the local copy has taken in
        self._caught_up = asyncio.Condition()
        self.gone: str | None = None  # why the connection ended, once it has

    @classmethod
    async def connect(cls, path: Path, timeout: float = 10.0) -> RemoteClient:
        """Connect, check that the server is run by this user (SO_PEERCRED, before a byte is
        sent: whatever we say next may be a private message), then say hello."""
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path), limit=wire.MAX_LINE_BYTES), timeout)
        uid = wire.peer_uid(writer.get_extra_info("socket"))
        if uid is not None and uid != os.getuid():
            writer.close()
            raise ServerError(f"the socket {path} is served by uid {uid}, not by you (uid {os.getuid()}): "
                              "nothing was sent to it; remove it, or check GPUTUI_RUNTIME_DIR")
        writer.write(wire.encode({"hello": {"protocol": wire.PROTOCOL}}))
        try:
            await writer.drain()
            reply = wire.decode(await asyncio.wait_for(reader.readline(), timeout))
        except (wire.WireError, asyncio.TimeoutError, ConnectionError, ValueError) as e:
            writer.close()
            why = "no answer (is it stopped, SIGSTOP?)" if isinstance(e, asyncio.TimeoutError) else str(e) or type(e).__name__
            raise ServerError(f"the gputui server at {path} did not answer its hello within {timeout:.0f} s: {why}; "
                              "`gputui stop --force` ends it") from None
        if "error" in reply:
            writer.close()
            err = reply["error"] if isinstance(reply["error"], dict) else {}
            raise ServerError(str(err.get("message")), mismatch=err.get("type") == "version")
        hello = reply.get("hello") or {}
        if hello.get("protocol") != wire.PROTOCOL:
            writer.close()
            raise ServerError(wire.version_mismatch(wire.PROTOCOL, hello.get("protocol"), "server"), mismatch=True)
        client = cls(reader, writer, hello)
        await client._track()
        return client

    # -- plumbing -----------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                msg = wire.decode(line)
                rid = msg.get("id")
                q = self._waiting.get(rid) if isinstance(rid, int) else None
                if q is not None:
                    q.put_nowait(msg)
                elif "error" in msg:  # about the connection itself
                    self.gone = str(msg["error"].get("message"))
        except (ConnectionError, ValueError, wire.WireError):
            pass
        finally:
            self.gone = self.gone or "the gputui server went away (stopped, or was killed)"
            for q in self._waiting.values():
                q.put_nowait(None)

    async def _send(self, op: str, args: dict[str, Any]) -> tuple[int, asyncio.Queue[dict[str, Any] | None]]:
        if self.gone:
            raise ServerGone(self.gone)
        self._next += 1
        rid = self._next
        data = wire.encode({"id": rid, "op": op, "args": args})
        if len(data) > wire.MAX_LINE_BYTES:  # refused here, in one line, before it goes anywhere
            raise CommandRefused(f"{op}: {len(data) >> 20} MiB is over the {wire.MAX_LINE_BYTES >> 20} MiB a request may "
                                 "carry (a conversation that long: /clear, or start a new one)")
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._waiting[rid] = q
        async with self._lock:
            try:
                self._writer.write(data)
                await self._writer.drain()
            except ConnectionError:
                self._waiting.pop(rid, None)
                raise ServerGone("the gputui server went away (stopped, or was killed)") from None
        return rid, q

    def _check(self, msg: dict[str, Any] | None) -> dict[str, Any]:
        if msg is None:
            raise ServerGone(self.gone or "the gputui server went away")
        if "error" in msg:
            raise CommandRefused(str(msg["error"].get("message")))
        return msg

    async def _call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        return (await self._call_seq(op, args))[0]

    async def _call_seq(self, op: str, args: dict[str, Any] | None = None) -> tuple[Any, int]:
        """(result, the number of the server's newest event when it answered)."""
        rid, q = await self._send(op, args or {})
        try:
            msg = self._check(await q.get())
        finally:
            self._waiting.pop(rid, None)
        seq = msg.get("seq")
        if isinstance(seq, int) and self._follow is not None and not self._follow.done():
            # read your writes: what the command changed is in models() before it returns
            async with self._caught_up:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._caught_up.wait_for(lambda: self._seen >= seq), 10)
        return msg.get("result"), seq if isinstance(seq, int) else 0

    async def _stream(self, op: str, args: dict[str, Any], on_id: Any = None) -> AsyncIterator[Any]:
        rid, q = await self._send(op, args)
        if on_id is not None:
            on_id(rid)
        try:
            while True:
                msg = self._check(await q.get())
                if msg.get("end"):
                    return
                yield msg.get("item")
        finally:
            self._waiting.pop(rid, None)

    async def _track(self) -> None:
        """Fill the local copy of the models, then keep it current from the server's events
        after that picture (never a replay of older states: a model ready now never reads as
        queued or loading on a new client)."""
        models, seq = await self._call_seq("models")
        self._set_views({v["name"]: ModelView.from_json(v) for v in models})
        self._seen = seq
        self._follow = asyncio.create_task(self._follow_models(seq), name="gputui-remote-models")

    @property
    def last_seq(self) -> int:
        """The newest event this client's copy of the models has taken in."""
        return self._seen

    async def _follow_models(self, since: int) -> None:
        with contextlib.suppress(CommandRefused):
            async for ev in self.events(since):
                if ev.type == "model":
                    self._set_views({**self._views, ev.model or "": ev.view()})
                elif ev.type == "reset":
                    self._set_views({d["name"]: ModelView.from_json(d) for d in ev.data.get("models", [])})
                async with self._caught_up:
                    self._seen = max(self._seen, ev.seq)
                    self._caught_up.notify_all()

    def _set_views(self, views: dict[str, ModelView]) -> None:
        self._views = MappingProxyType(views)
        self._pids = MappingProxyType({v.pid: v.name for v in views.values() if v.pid is not None})

    # -- the Client interface -----------------------------------------------------------

    def models(self) -> list[ModelView]:
        return list(self._views.values())

    def model(self, name: str) -> ModelView | None:
        return self._views.get(name)

    def worker_pids(self) -> Mapping[int, str]:
        return self._pids

    async def events(self, since: int = 0) -> AsyncIterator[Event]:
        async for item in self._stream("events", {"since": since}):
            yield Event.from_json(item)

    async def load(self, request: ModelRequest) -> ModelView:
        return ModelView.from_json(await self._call("load", {"request": request.to_json()}))

    async def unload(self, name: str) -> UnloadResult:
        return UnloadResult.from_json(await self._call("unload", {"name": name}))

    async def move(self, name: str, gpu: str) -> ModelView:
        return ModelView.from_json(await self._call("move", {"name": name, "gpu": gpu}))

    async def reload(self, name: str) -> ModelView:
        return ModelView.from_json(await self._call("reload", {"name": name}))

    async def plan_profile(self, profile: Profile) -> list[PlanLine]:
        return [PlanLine.from_json(x) for x in await self._call("plan_profile", {"profile": profile.to_json()})]

    async def apply_profile(self, profile: Profile) -> list[ProfileStep]:
        return [ProfileStep.from_json(x) for x in await self._call("apply_profile", {"profile": profile.to_json()})]

    async def current_profile(self, name: str) -> Profile:
        return Profile.from_json(await self._call("current_profile", {"name": name}))

    def chat(self, name: str, request: ChatRequest) -> RemoteChatStream:
        return RemoteChatStream(self, name, request)

    async def snapshot_json(self) -> Any:
        """The server's GPU readings (a --demo server's simulated GPUs), as JSON."""
        return await self._call("snapshot")

    async def shutdown(self) -> None:
        """Ask the server to unload everything and exit."""
        await self._call("shutdown")

    async def start(self) -> None:
        pass  # the server runs its scheduler

    async def close(self) -> None:
        """Detach: the server and its models go on."""
        for task in (self._follow, self._reader_task):
            if task is not None:
                task.cancel()
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


class ServerTelemetry:
    """The server's GPU readings, for a dashboard attached to a server whose GPUs are not this
    machine's NVML: a --demo server's simulated GPUs (the ones its workers fill), a Ray server's
    cluster, or any server on a machine where NVML cannot be read here.
    snapshot() is called from the dashboard's poll thread; it asks over the client's loop."""

    def __init__(self, client: Any, timeout: float = 10.0) -> None:  # a RemoteClient or ReconnectingClient
        self._client = client
        self.backend = str(client.server.get("telemetry") or ("simulated" if client.server.get("demo") else "nvml"))
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout

    def snapshot(self) -> ServerSnapshot:
        future = asyncio.run_coroutine_threadsafe(self._client.snapshot_json(), self._loop)
        try:
            return snapshot_from_json(future.result(self._timeout))
        except Exception as e:  # noqa: BLE001 - the dashboard shows why it has no picture
            why = str(e) or type(e).__name__  # a timeout's text is empty: "(empty reason)" was shown
            return ServerSnapshot(time.time(), self.backend, error=f"the server's GPU reading failed: {why}",
                                  transient=not isinstance(e, CommandRefused) or isinstance(e, ServerGone))

    def close(self) -> None:
        pass
