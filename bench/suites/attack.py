"""The server under the attack of issue 31 (CPU, `gputui serve --demo`, real tiny workers):
its RSS and open descriptors at rest, after 20 clients cut off mid-request, after 60 clients
that send 30 MiB with no newline and vanish (three rounds of 20), and after 4000 short chats.
Before the fixes: 40 -> 701 MB after the dead clients, 40 -> 3,698 MB after the long lines."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import say
from gputui.api.chat import ChatRequest

LINE_MIB = 30


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return -1.0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _hello(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
    writer.write(b'{"hello": {"protocol": 1}}\n')
    await writer.drain()
    await reader.readline()
    return reader, writer


async def _cut_mid_request(path: Path) -> None:
    reader, writer = await _hello(path)
    writer.write(json.dumps({"id": 1, "op": "chat", "args": {"name": "glm", "request": {
        "messages": [{"role": "user", "content": "tell me a story"}],
        "params": {"max_new_tokens": 64, "ignore_stop": True}}}}).encode() + b"\n")
    writer.write(b'{"id": 2, "op": "chat", "args": {"name": "glm", "request": {"messages": [{"role": "user", "content": "'
                 + b"y" * (8 << 20))  # and half of a second, long one
    await writer.drain()
    await reader.readline()  # the first token is under way
    writer.transport.abort()


async def _long_line(path: Path) -> None:
    _reader, writer = await _hello(path)
    chunk = b"x" * (1 << 20)
    try:
        for _ in range(LINE_MIB):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass  # refused once over the limit: as it should
    writer.transport.abort()


async def _chats(path: Path, n: int, parallel: int) -> int:
    from gputui.remote.client import RemoteClient

    done = 0

    async def one_client(count: int) -> None:
        nonlocal done
        client = await RemoteClient.connect(path)
        for _ in range(count):
            async for ev in client.chat("glm", ChatRequest(({"role": "user", "content": "hi"},),
                                                           params={"max_new_tokens": 2, "ignore_stop": True})):
                if ev.event == "done":
                    done += 1
        await client.close()

    await asyncio.gather(*(one_client(n // parallel) for _ in range(parallel)))
    return done


async def run(args: argparse.Namespace) -> None:
    from gputui.core.requests import ModelRequest
    from gputui.remote.client import RemoteClient

    home = Path(tempfile.mkdtemp(prefix="gputui-attack-"))
    env = {**os.environ, **{f"GPUTUI_{k}_DIR": str(home / k.lower()) for k in ("DATA", "CONFIG", "RUNTIME", "STATE")}}
    os.environ.update({k: v for k, v in env.items() if k.startswith("GPUTUI_")})
    from gputui.remote.lifecycle import socket_path

    server = subprocess.Popen([sys.executable, "-m", "gputui", "serve", "--demo"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert server.stdout is not None
    for line in server.stdout:
        if "listening on" in line:
            break
    path = socket_path(demo=True)
    client = await RemoteClient.connect(path)
    view = await client.load(ModelRequest("glm", "chatglm3", "demo:chatglm3", max_context=256))
    assert view.ready, view.error
    await _chats(path, 20, 2)  # warm: the first replies build caches

    def measure(phase: str, **extra: object) -> None:
        say(step=phase, rss_mib=_rss_mib(server.pid), fds=_fds(server.pid), **extra)

    measure("at_rest")
    t = time.monotonic()
    await asyncio.gather(*(_cut_mid_request(path) for _ in range(20)))
    await asyncio.sleep(2)  # their replies finish server-side
    measure("after_20_clients_cut_mid_request", seconds=round(time.monotonic() - t, 2))
    for round_ in range(3):
        t = time.monotonic()
        await asyncio.gather(*(_long_line(path) for _ in range(20)))
        await asyncio.sleep(1)
        measure(f"after_{20 * (round_ + 1)}_unterminated_{LINE_MIB}_MiB_lines", seconds=round(time.monotonic() - t, 2))
    t = time.monotonic()
    done = await _chats(path, 4000, 8)
    measure("after_4000_chats", chats_done=done, seconds=round(time.monotonic() - t, 1))
    assert (await client._call("info"))["pid"] == server.pid  # still answering
    await client.close()
    server.terminate()
    server.wait(60)
