"""Every GPUTUI_* environment variable gputui reads, read here and nowhere else, so `gputui
doctor` can say which are set and what each one changes. (Settings a user keeps belong in the
settings file; these are for paths, experiments, benchmarks and tests.)

In core, below everything, because every process reads one: the worker its decode switches,
the server its folders, the simulation its GPU count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    name: str
    meaning: str
    default: str | None = None


VARIABLES = {v.name: v for v in (
    Variable("GPUTUI_DATA_DIR", "folder for conversations and the event log (default: the platform's user data folder)"),
    Variable("GPUTUI_CONFIG_DIR", "folder for settings.toml and saved profiles (default: the user config folder)"),
    Variable("GPUTUI_STATE_DIR", "folder for the server's logs (default: the user state folder)"),
    Variable("GPUTUI_RUNTIME_DIR", "DIR: the server's socket and lock go in DIR/gputui-UID (default: the state folder)"),
    Variable("GPUTUI_DEMO_GPUS", "how many simulated GPUs --demo shows (1-16)", "2"),
    Variable("GPUTUI_FAST_LOAD", "0: read weights with the plain per-tensor loader (bench comparisons)", "1"),
    Variable("GPUTUI_FUSED_DECODE", "0: decode with the plain PyTorch step, not gputui's fused Triton kernels", "1"),
    Variable("GPUTUI_GLM_RUNTIME", "transformers: run ChatGLM3 on transformers' GlmForCausalLM, one reply at a time "
                                   "(gputui's own model, batching replies, is the default)", "gputui"),
    Variable("GPUTUI_CAUSAL_DECODER", "transformers: decode causal-lm models on transformers' forward (gputui's own "
                                      "decoder is the default for Llama, Mistral and Qwen2 where it fits)", "gputui"),
    Variable("GPUTUI_PDL", "0: no programmatic dependent launch in the Triton GEMVs (Hopper and later)", "1"),
    Variable("GPUTUI_TINY_CACHE", "folder where tests keep the tiny checkpoints they build"),
    Variable("GPUTUI_FAULT_PAUSE", "POINT:SECONDS - tests: hold a worker at a load stage (or each token: token)"),
    Variable("GPUTUI_FAULT_DEVICE_ASSERT", "generate - tests: the next request hits a real device-side assert"),
)}


def get(name: str) -> str | None:
    """The variable's value, its default when unset or empty; a name not in VARIABLES is a bug."""
    var = VARIABLES[name]
    return os.environ.get(name) or var.default


def switched_on(name: str) -> bool:
    """A 1/0 switch: anything but "0" is on."""
    return get(name) != "0"


def set_now() -> list[tuple[Variable, str]]:
    """The variables this process was given, for `gputui doctor`."""
    return [(v, os.environ[v.name]) for v in VARIABLES.values() if os.environ.get(v.name)]
