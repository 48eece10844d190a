from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gputui.core.placement import PlacementPolicy
from gputui.core.units import GiB, MiB
from gputui.hardware.simulated import SimulatedServer, make_gpus
from gputui.scheduler import Scheduler
from tests.fakes.fake_worker import FakeLauncher


class World:
    """A simulated server, a fake launcher and a scheduler wired together."""

    def __init__(self, gpus: int = 2, gib: float = 4) -> None:
        self.server = SimulatedServer(make_gpus(gpus, int(gib * GiB)))
        self.launcher = FakeLauncher(self.server)
        self.scheduler = Scheduler(self.server, self.launcher, policy=PlacementPolicy(margin_bytes=64 * MiB),
                                   memory_return_timeout=2.0)

    def check_invariants(self) -> None:
        """After every scheduler test: nothing over capacity, no orphans, memory only for ready models."""
        snap = self.server.snapshot()
        for g in snap.gpus:
            assert (g.used_bytes or 0) <= (g.total_bytes or 0)
        ready_pids = {r.pid for r in self.scheduler.models.values() if r.state == "ready"}
        for proc in self.launcher.started:
            if proc.returncode is None:
                assert proc.pid in ready_pids, f"orphan worker {proc.pid}"
        holders = {p.pid for g in snap.gpus for p in g.processes if p.user == "you"}
        assert holders <= ready_pids, f"memory held by non-ready workers {holders - ready_pids}"


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    yield w
    w.check_invariants()
    await w.scheduler.close()


@pytest.fixture
def model_path(tiny_chatglm3_path: Path) -> str:
    return str(tiny_chatglm3_path)
