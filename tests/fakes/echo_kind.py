"""A third model kind, for tests only: it answers with the last message backwards, word by
word. It exists to prove that a kind is one runtime and one registry entry - registered from
here (GPUTUI_KIND_MODULES), with no change to the TUI, the chat or the scheduler."""

from __future__ import annotations

from typing import Any

from gputui.core.config_schema import count
from gputui.core.kinds import ModelKind, register_kind


def _extra(cfg: dict[str, Any], context: int, nbytes: int) -> tuple[int, int]:
    return context * cfg["hidden_size"] * nbytes, 1 << 20  # a pretend KV cache, a little activation


ECHO = ModelKind(
    "echo", ("gputui-echo",), "tests.fakes.echo_runtime:EchoRuntime", _extra, 128,
    "test-only: answers backwards", config_fields=(count("hidden_size", 4096),), settings=("max_new_tokens",),
    input_hint="anything: it answers backwards",
)
register_kind(ECHO)
