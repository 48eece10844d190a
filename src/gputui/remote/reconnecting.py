"""A dashboard's client that outlives its server: when the server goes (`gputui stop` from
another terminal, an upgrade, a crash), the event stream says so, looks for a server again with
backoff, and once one answers goes on from its present state (a `reset` with its models).

Commands sent while no server answers fail as they would on a closed connection (one line);
the dashboard never starts a server by itself here - the user stopped it for a reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from gputui.api.chat import ChatRequest
from gputui.api.client import CommandRefused
from gputui.api.views import Event, ModelView, PlanLine, ProfileStep, UnloadResult
from gputui.core.profiles import Profile
from gputui.core.requests import ModelRequest
from gputui.remote.client import RemoteChatStream, RemoteClient

BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # then every 8 s


class ReconnectingClient:
    def __init__(self, client: RemoteClient, find: Callable[[], Awaitable[RemoteClient | None]]) -> None:
        self._client = client
        self._find = find
        self._closed = False
        self.reconnects = 0

    # -- what the dashboard reads ----------------------------------------------------------

    @property
    def device(self) -> str:
        return self._client.device

    @property
    def server(self) -> dict[str, Any]:
        return self._client.server

    @property
    def gone(self) -> str | None:
        return self._client.gone

    @property
    def last_seq(self) -> int:
        return self._client.last_seq

    def models(self) -> list[ModelView]:
        return self._client.models()

    def model(self, name: str) -> ModelView | None:
        return self._client.model(name)

    def worker_pids(self) -> Mapping[int, str]:
        return self._client.worker_pids()

    async def snapshot_json(self) -> Any:
        return await self._client.snapshot_json()

    async def events(self, since: int = 0) -> AsyncIterator[Event]:
        """The server's events; across a restart: a `server_gone` record, then, once a server
        answers again, a `reset` with its models and a `reconnected` record."""
        while not self._closed:
            try:
                async for ev in self._client.events(since):
                    since = ev.seq
                    yield ev
            except CommandRefused:
                pass
            if self._closed:
                return
            why = self._client.gone or "the gputui server went away"
            yield _record(since, "server_gone", message=f"{why}; looking for it again")
            client = await self._reconnect()
            if client is None:
                return
            since = client.last_seq
            yield Event(since, time.time(), "reset", None, {"models": [v.to_json() for v in client.models()]})
            yield _record(since, "reconnected", pid=client.server.get("pid"), version=client.server.get("version"))

    async def _reconnect(self) -> RemoteClient | None:
        attempt = 0
        while not self._closed:
            await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
            attempt += 1
            try:
                client = await self._find()
            except CommandRefused:
                client = None
            if client is not None:
                old, self._client = self._client, client
                self.reconnects += 1
                await old.close()
                return client
        return None

    # -- commands: to whichever server answers now -------------------------------------------

    async def load(self, request: ModelRequest) -> ModelView:
        return await self._client.load(request)

    async def unload(self, name: str) -> UnloadResult:
        return await self._client.unload(name)

    async def move(self, name: str, gpu: str) -> ModelView:
        return await self._client.move(name, gpu)

    async def reload(self, name: str) -> ModelView:
        return await self._client.reload(name)

    async def plan_profile(self, profile: Profile) -> list[PlanLine]:
        return await self._client.plan_profile(profile)

    async def apply_profile(self, profile: Profile) -> list[ProfileStep]:
        return await self._client.apply_profile(profile)

    async def current_profile(self, name: str) -> Profile:
        return await self._client.current_profile(name)

    def chat(self, name: str, request: ChatRequest) -> RemoteChatStream:
        return self._client.chat(name, request)

    async def shutdown(self) -> None:
        await self._client.shutdown()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._closed = True
        await self._client.close()


def _record(seq: int, what: str, **fields: Any) -> Event:
    return Event(seq, time.time(), "timeline", None, {"t": time.time(), "event": what, "model": None, **fields})
