"""What a user asks for: one model, its kind, its folder and where to put it.

One form from the load form, a profile, the CLI and the client seam down to the scheduler; the
scheduler turns it into the worker's load spec in one place. JSON both ways, since it crosses
a socket unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

DTYPES = ("bfloat16", "float16", "float32")


def default_dtype(device: str) -> str:
    """The dtype when none is asked for: bfloat16 on a GPU, float32 on the CPU (the only place
    this is decided)."""
    return "bfloat16" if device == "cuda" else "float32"


@dataclass(frozen=True)
class ModelRequest:
    name: str
    kind: str
    path: str  # a folder, or demo:NAME for a shipped tiny model (resolved before loading)
    gpus: tuple[str, ...] = ("auto",)  # UUIDs, PCI bus ids or indices; several = split the layers
    dtype: str | None = None  # None: default_dtype(device)
    max_context: int | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    # unload after this long unused (as Ollama's keep_alive); math.inf: never; None: not said,
    # so the server's default applies (settings keep_alive, itself "forever" unless set)
    keep_alive_s: float | None = None
    node: str | None = None  # on a cluster: the host (name or Ray node id) to place it on; None: any
    pinned: bool = False  # never unloaded to make room for another model (the settings' evict)
    # replies answered at once, each in a KV-cache slot of its own (kinds that batch; None: 1)
    max_batch: int | None = None
    # where the GPU was when a profile was saved (for messages when its UUID is gone); not part
    # of what is asked, so two requests that differ only here are the same request
    gpu_index_hint: int | None = field(default=None, compare=False)

    def dtype_on(self, device: str) -> str:
        return self.dtype or default_dtype(device)

    def with_path(self, path: str) -> ModelRequest:
        return replace(self, path=path)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "path": self.path, "gpus": list(self.gpus),
                "dtype": self.dtype, "max_context": self.max_context, "generation": dict(self.generation),
                "keep_alive_s": "forever" if self.keep_alive_s == math.inf else self.keep_alive_s, "node": self.node,
                "pinned": self.pinned, "gpu_index_hint": self.gpu_index_hint, "max_batch": self.max_batch}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelRequest:
        return cls(name=str(d["name"]), kind=str(d["kind"]), path=str(d["path"]),
                   gpus=tuple(str(g) for g in d.get("gpus") or ("auto",)), dtype=d.get("dtype"),
                   max_context=d.get("max_context"), generation=dict(d.get("generation") or {}),
                   keep_alive_s=_seconds(d.get("keep_alive_s")), node=str(d["node"]) if d.get("node") else None,
                   pinned=d.get("pinned") is True, gpu_index_hint=d.get("gpu_index_hint"),
                   max_batch=_whole(d.get("max_batch")))


MIN_KEEP_ALIVE_S = 1.0
MAX_BATCH_LIMIT = 256


def _whole(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_BATCH_LIMIT else None


def _seconds(v: Any) -> float | None:
    """Seconds of keep-alive: 0 (unload once a reply ends, as Ollama's 0), at least
    MIN_KEEP_ALIVE_S, or forever. A sliver (1e-300 s) is refused: it unloaded every model a
    second after it was ready."""
    if v is None:
        return None
    if v == "forever":
        return math.inf
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v == 0 or MIN_KEEP_ALIVE_S <= v <= math.inf):
        raise ValueError(f"keep-alive must be 0 (unload after the reply), {MIN_KEEP_ALIVE_S:g} s or more, or forever, "
                         f"not {v!r:.40}")
    return float(v)


def for_the_dashboard(request: ModelRequest) -> ModelRequest:
    """A model someone loads while watching the dashboard stays until they unload it, unless
    its request says otherwise (the settings' finite default is for one-off `gputui chat`
    and `gputui run` loads)."""
    return request if request.keep_alive_s is not None else replace(request, keep_alive_s=math.inf)


def effective_keep_alive(requested: float | None, default: float | None) -> float | None:
    """Seconds a model may sit unused before its unload; None: it stays until unloaded."""
    keep = default if requested is None else requested
    return None if keep is None or math.isinf(keep) else keep


def parse_duration(text: str | float | int) -> float | None:
    """"30s", "10m", "2h", "1d", a number of seconds, 0 (unload after the reply), or "forever"
    (math.inf); ValueError otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return _seconds(text)
    t = str(text).strip().lower()
    if t in ("forever", "never", "-1", "inf"):
        return math.inf
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise ValueError(f"keep-alive {text!r:.30} is not a duration: say 30s, 10m, 2h or forever") from None
    return _seconds(value)
