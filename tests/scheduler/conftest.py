from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gputui.core.placement import PlacementPolicy
from gputui.core.units import GiB, MiB
from gputui.hardware.simulated import SimulatedServer, make_gpus
from gputui.scheduler import Scheduler
from tests.fakes.fake_worker import FakeLauncher
from tests.invariants import check_invariants


class World:
    """A simulated server, a fake launcher and a scheduler wired together."""

    def __init__(self, gpus: int = 2, gib: float = 4) -> None:
        self.server = SimulatedServer(make_gpus(gpus, int(gib * GiB)))
        self.launcher = FakeLauncher(self.server)
        self.scheduler = Scheduler(self.server, self.launcher, policy=PlacementPolicy(margin_bytes=64 * MiB),
                                   memory_return_timeout=2.0)

    def check_invariants(self) -> None:
        """The four invariants of reliability.md (one implementation: tests/invariants.py)."""
        check_invariants(self.scheduler, settled=True)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    yield w
    w.check_invariants()
    await w.scheduler.close()


@pytest.fixture
def model_path(tiny_chatglm3_path: Path) -> str:
    return str(tiny_chatglm3_path)


@pytest.fixture
async def world_1gpu() -> AsyncIterator[World]:
    """One GPU, so every model shares it (eviction, contention)."""
    w = World(gpus=1, gib=4)
    yield w
    w.check_invariants()
    await w.scheduler.close()
