"""The API's connection guard: a client that trickles its headers is cut off at the deadline, one
that sends them whole is not, and past the limit a connection gets a 503 in OpenAI's shape."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gputui.http_api.guard import Connections


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""

    def data_received(self, data: bytes) -> None:
        self.data += data


async def serve(tmp_path: Path, connections: Connections) -> tuple[asyncio.AbstractServer, str, list[Recorder]]:
    made: list[Recorder] = []

    def inner() -> Recorder:
        made.append(Recorder())
        return made[-1]

    path = str(tmp_path / "api.sock")
    server = await asyncio.get_running_loop().create_unix_server(connections.factory(inner), path=path)
    return server, path, made


async def test_headers_that_trickle_are_cut_off_and_whole_ones_are_not(tmp_path: Path) -> None:
    server, path, made = await serve(tmp_path, Connections(limit=8, header_timeout=2.0))
    slow_r, slow_w = await asyncio.open_unix_connection(path)
    whole_r, whole_w = await asyncio.open_unix_connection(path)
    slow_w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    whole_w.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    await slow_w.drain()
    await whole_w.drain()
    assert await asyncio.wait_for(slow_r.read(), 10) == b""  # closed on it
    await asyncio.sleep(2.5)  # past the deadline (its timer was cancelled when the headers came)
    assert not whole_w.is_closing() and made[1].data.endswith(b"\r\n\r\n")
    whole_w.write(b"more")
    await whole_w.drain()
    await asyncio.sleep(0.05)
    assert made[1].data.endswith(b"more")  # still served
    for w in (slow_w, whole_w):
        w.close()
    server.close()


async def test_past_the_limit_a_connection_is_told_the_server_is_busy(tmp_path: Path) -> None:
    connections = Connections(limit=2, header_timeout=30)
    server, path, _made = await serve(tmp_path, connections)
    held = [await asyncio.open_unix_connection(path) for _ in range(2)]
    await asyncio.sleep(0.05)
    r, w = await asyncio.open_unix_connection(path)
    answer = await asyncio.wait_for(r.read(), 10)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503") and json.loads(body)["error"]["code"] == "busy"
    assert connections.open == 2
    held[0][1].close()
    await asyncio.sleep(0.1)
    assert connections.open == 1  # a slot again
    for _r, w2 in held[1:]:
        w2.close()
    w.close()
    server.close()


async def test_a_body_that_trickles_gets_a_408_and_the_server_serves_on(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Headers whole, then a body that stops short of its Content-Length: a 408 in OpenAI's shape
    at the body deadline (shortened here), never a handler waiting for ever; the next request is
    answered."""
    from aiohttp import web

    from gputui.http_api import app as api_app
    from gputui.http_api.metrics import Metrics

    class NoModels:
        def models(self) -> list[object]:
            return []

        def model(self, name: str) -> None:
            return None

    monkeypatch.setattr(api_app, "BODY_TIMEOUT_S", 0.5)
    client = NoModels()
    app = api_app.make_app(client, Metrics(lambda: None), api_app.ImageFiles(tmp_path / "img"))  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    path = str(tmp_path / "api.sock")
    site = web.UnixSite(runner, path)
    await site.start()
    try:
        r, w = await asyncio.open_unix_connection(path)
        w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{\"model\": ")  # 10 of the 100 bytes, then nothing
        await w.drain()
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 408"), head
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        assert json.loads(await r.readexactly(length))["error"]["code"] == "timeout"
        w.close()
        r2, w2 = await asyncio.open_unix_connection(path)
        w2.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await w2.drain()
        assert (await asyncio.wait_for(r2.read(), 30)).startswith(b"HTTP/1.1 200")
        w2.close()
    finally:
        await runner.cleanup()
