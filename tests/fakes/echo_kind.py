"""A third model kind, for tests only: it answers with the last message backwards, word by
word. It exists to prove that a kind is one runtime and one registry entry - declared by an
installed package's entry point (group gputui.kinds), with no change to the TUI, the chat or
the scheduler. `declare_in` makes that package's metadata (a .dist-info folder) in a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gputui.core.config_schema import count
from gputui.core.kinds import ENTRY_POINT_GROUP, ModelKind


def _extra(cfg: dict[str, Any], context: int, nbytes: int) -> tuple[int, int]:
    return context * cfg["hidden_size"] * nbytes, 1 << 20  # a pretend KV cache, a little activation


ECHO = ModelKind(
    "echo", ("gputui-echo",), "tests.fakes.echo_runtime:EchoRuntime", _extra, 128,
    "test-only: answers backwards", config_fields=(count("hidden_size", 4096),), settings=("max_new_tokens",),
    input_hint="anything: it answers backwards",
)


def declare_in(folder: Path) -> Path:
    """An installed distribution whose entry point declares ECHO, as `pip install` would leave it;
    `folder` goes on sys.path (and the workers' PYTHONPATH) for importlib.metadata to find it."""
    info = folder / "gputui_echo_kind-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gputui-echo-kind\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\necho = tests.fakes.echo_kind:ECHO\n")
    return folder
