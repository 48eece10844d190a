"""config.json, checked by schema before any number from it is believed.

A crafted config can put a string, a list, 0, -1e9 or NaN where the estimator multiplies
sizes: each field a kind reads is declared here with its type and range, and anything else is
one CheckpointError naming the file and the field (never a TypeError out of the preflight, and
never "needs nan MiB").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gputui.core.checkpoint_info import CheckpointError


@dataclass(frozen=True)
class Field:
    """One config field: `key` may be dotted ("text_config.hidden_size")."""

    key: str
    kind: str = "count"  # count: a whole number in [lo, hi]; flag: true/false; number: finite, > 0
    required: bool = True
    lo: int = 1
    hi: int = 1 << 24


def count(key: str, hi: int = 1 << 24, *, lo: int = 1, required: bool = True) -> Field:
    return Field(key, "count", required, lo, hi)


def optional(key: str, hi: int = 1 << 24, *, lo: int = 1) -> Field:
    return Field(key, "count", False, lo, hi)


def check_config(cfg: dict[str, Any], fields: Sequence[Field], folder: Path) -> None:
    where = folder / "config.json"
    for f in fields:
        present, value = _lookup(cfg, f.key, where)
        if not present:
            if f.required:
                raise CheckpointError(f"{where}: {f.key} is missing")
            continue
        if f.kind == "count":
            ok = isinstance(value, int) and not isinstance(value, bool) and f.lo <= value <= f.hi
            need = f"a whole number from {f.lo} to {f.hi}"
        elif f.kind == "flag":
            ok, need = isinstance(value, bool), "true or false"
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
            need = "a finite number > 0"
        if not ok:
            raise CheckpointError(f"{where}: {f.key} must be {need}, not {_short(value)}")


def _lookup(cfg: dict[str, Any], key: str, where: Path) -> tuple[bool, Any]:
    node: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            raise CheckpointError(f"{where}: {'.'.join(parts[:i])} must be an object, not {_short(node)}")
        if part not in node or node[part] is None:
            return False, None
        node = node[part]
    return True, node


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
