"""Generation settings (max_new_tokens, temperature, top_p, system_prompt): one check for
every place they come from - profiles, `/set` in a chat, the CLI's flags.

A value a worker cannot use (NaN, inf, top_p = 0, a negative count) is refused where it is
typed, in one line, instead of failing every reply later.
"""

from __future__ import annotations

import math
from typing import Any

MAX_NEW_TOKENS_LIMIT = 1 << 20
SETTINGS = ("max_new_tokens", "temperature", "top_p")  # the numeric ones, in the order shown
KEYS = frozenset((*SETTINGS, "system_prompt"))


def check(key: str, value: Any) -> str | None:
    """Why `value` is not a usable `key`, or None if it is."""
    if key == "system_prompt":
        return None if isinstance(value, str) else "system_prompt must be text"
    if key not in SETTINGS:
        return f"unknown generation setting {key!r}; known: {', '.join(sorted(KEYS))}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{key} must be a number"
    if key == "max_new_tokens":
        ok = isinstance(value, int) and 1 <= value <= MAX_NEW_TOKENS_LIMIT
        return None if ok else f"max_new_tokens must be a whole number from 1 to {MAX_NEW_TOKENS_LIMIT}"
    if key == "temperature":
        return None if 0 <= value <= 10 else "temperature must be from 0 (greedy) to 10"
    return None if 0 < value <= 1 else "top_p must be above 0 and at most 1"


def parse(key: str, raw: str) -> int | float:
    """A typed value (`/set key=raw`, a CLI flag); ValueError with the reason otherwise."""
    if key not in SETTINGS:
        raise ValueError(f"unknown setting {key!r}; known: {', '.join(SETTINGS)}")
    try:
        value: int | float = int(raw) if key == "max_new_tokens" else float(raw)
    except ValueError:
        raise ValueError(f"{key} must be a number, not {raw[:20]!r}") from None
    why = check(key, value)
    if why:
        raise ValueError(why)
    return value
