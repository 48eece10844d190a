"""Connections a client cannot hold for nothing: at most MAX_CONNECTIONS at once, and the first
request's headers whole within HEADER_TIMEOUT_S (a client that trickles them, a byte a minute,
would otherwise keep a connection for ever - aiohttp has no deadline for headers). Each accepted
connection is handed to aiohttp's own protocol; the guard only counts and times it. A body that
trickles is bounded where it is read (app.py, BODY_TIMEOUT_S)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

MAX_CONNECTIONS = 256
HEADER_TIMEOUT_S = 30.0
_BUSY = json.dumps({"error": {"message": "too many connections to this gputui API", "type": "server_error",
                              "param": None, "code": "busy"}}).encode()
FULL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(_BUSY)) + _BUSY


class Connections:
    def __init__(self, limit: int = MAX_CONNECTIONS, header_timeout: float = HEADER_TIMEOUT_S) -> None:
        self.limit, self.header_timeout = limit, header_timeout
        self.open = 0

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: Guarded(self, inner())


class Guarded(asyncio.Protocol):
    def __init__(self, connections: Connections, inner: asyncio.Protocol) -> None:
        self.connections, self.inner = connections, inner
        self.transport: asyncio.Transport | None = None
        self._seen = b""
        self._timer: asyncio.TimerHandle | None = None
        self._counted = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.connections.open >= self.connections.limit:
            transport.write(FULL)
            transport.close()
            return
        self.connections.open += 1
        self._counted = True
        self._timer = asyncio.get_running_loop().call_later(self.connections.header_timeout, self._too_slow)
        self.inner.connection_made(transport)

    def _too_slow(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # headers never completed: no answer is owed

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            self._seen = (self._seen + data)[-4096:]
            if b"\r\n\r\n" in self._seen:  # the first request's headers are whole
                self._timer.cancel()
                self._timer, self._seen = None, b""
        if self._counted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self._counted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._counted:
            self.connections.open -= 1
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._counted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self._counted:
            self.inner.resume_writing()
