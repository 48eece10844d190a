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
