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
def private_folders(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Every test gets its own data, config and runtime folders: none writes to the real user's,
    and none sees another test's conversations, profiles or lock. (A test that wants its own
    sets the variable again.)"""
    root = tmp_path_factory.mktemp("home")
    for var, sub in (("GPUTUI_DATA_DIR", "data"), ("GPUTUI_CONFIG_DIR", "config"), ("GPUTUI_RUNTIME_DIR", "run"),
                     ("GPUTUI_STATE_DIR", "state")):
        monkeypatch.setenv(var, str(root / sub))
    yield root
    stop_servers(root / "run")


def stop_servers(run: Path) -> None:
    """A test that started a gputui server in the background (`gputui chat`, the dashboard)
    leaves none behind: each server's lock file holds its pid."""
    import signal
    import time

    for lock in run.glob("**/*server.lock") if run.is_dir() else ():
        text = lock.read_text().strip()
        if not text.isdigit():
            continue
        pid = int(text)
        try:
            os.kill(pid, signal.SIGTERM)  # it unloads its models and exits
        except ProcessLookupError:
            continue
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)


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


@pytest.fixture(scope="session", params=["llama", "qwen2", "mistral"])
def tiny_causal_lm_path(request: pytest.FixtureRequest, tiny_root: Path) -> Path:
    from gputui.models.tiny import tiny_causal_lm

    return tiny_causal_lm(request.param, tiny_root)
