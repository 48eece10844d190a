"""Shared fixtures: tiny real-format checkpoints, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("GPUTUI_TINY_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_chatglm3_path(tiny_root: Path) -> Path:
    from gputui.models.tiny import tiny_chatglm3

    return tiny_chatglm3(tiny_root)


@pytest.fixture(scope="session")
def tiny_blip2_path(tiny_root: Path) -> Path:
    from gputui.models.tiny import tiny_blip2

    return tiny_blip2(tiny_root)


@pytest.fixture(autouse=True)
def private_folders(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data, config and runtime folders: none writes to the real user's,
    and none sees another test's conversations, profiles or lock. (A test that wants its own
    sets the variable again.)"""
    root = tmp_path_factory.mktemp("home")
    for var, sub in (("GPUTUI_DATA_DIR", "data"), ("GPUTUI_CONFIG_DIR", "config"), ("GPUTUI_RUNTIME_DIR", "run")):
        monkeypatch.setenv(var, str(root / sub))
    return root


@pytest.fixture(autouse=True)
def scheduler_invariants(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Every Scheduler a test makes is checked against the four invariants when the test ends
    (after its own fixtures have closed it)."""
    from gputui.scheduler import scheduler as scheduler_module
    from tests.invariants import check_invariants

    made: list = []
    original = scheduler_module.Scheduler.__init__

    def recording_init(self, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(scheduler_module.Scheduler, "__init__", recording_init)
    yield made
    for sched in made:
        check_invariants(sched, settled=True)
