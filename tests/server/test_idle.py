"""A connection that asked something and then says nothing more is closed after IDLE_S
(issue 31, item 4): the wait that began while its answer was under way used to have no end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gputui.hardware.simulated import SimulatedServer, make_gpus
from gputui.remote import server as server_module
from gputui.remote.server import Server
from gputui.scheduler import Scheduler
from gputui.scheduler.client import LocalClient
from gputui.scheduler.timeline import Timeline
from tests.fakes.fake_worker import FakeLauncher


async def test_a_connection_idle_after_its_answer_is_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "IDLE_S", 0.5)
    sim = SimulatedServer(make_gpus(1))
    client = LocalClient(Scheduler(sim, FakeLauncher(sim), timeline=Timeline()))
    server = Server(client)
    path = tmp_path / "s.sock"
    await server.listen(path)
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(b'{"hello": {"protocol": 1}}\n{"id": 1, "op": "models"}\n')
    await writer.drain()
    assert b"hello" in await reader.readline()
    assert b'"result":[]' in await reader.readline()
    rest = await asyncio.wait_for(reader.read(), 60)  # the server closes it: EOF, not a hang
    assert rest == b""
    writer.close()
    await server.close()
    await client.close()
