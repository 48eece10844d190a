"""Where a model goes: small pure decisions over one snapshot, tested with tables.

- Explicit placement: the GPU the user named (NVML index, UUID or PCI bus id).
- `auto`: the single GPU with the most usable memory that fits the whole model, skipping GPUs
  where other users' processes run (unless allowed) - shared-server manners.
- usable = free - reserve kept for others - safety margin. Short -> one-line refusal that
  names the GPU, the need, the free memory and a GPU that would fit.
- Several GPUs named: the model's layers are spread over them (core/split.py), each GPU
  checked against its own share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from gputui.core.snapshot import GpuSnapshot, ServerSnapshot
from gputui.core.split import SplitCosts, SplitRefused, split_layers
from gputui.core.units import MiB, human_bytes

DEFAULT_RESERVE_BYTES = 0
DEFAULT_MARGIN_BYTES = 256 * MiB


class PlacementRefused(Exception):
    """Why a model cannot be placed; str() is one line for the user."""


@dataclass(frozen=True)
class PlacementPolicy:
    reserve_bytes: int = DEFAULT_RESERVE_BYTES  # left free on every GPU for other users
    margin_bytes: int = DEFAULT_MARGIN_BYTES  # our own error bar on the estimate
    allow_shared: bool = False  # may `auto` pick a GPU where another user's process runs?
    never_touch: tuple[str, ...] = ()  # GPUs (index, UUID, PCI bus id) never placed on, even when named

    def forbids(self, snapshot: ServerSnapshot, g: GpuSnapshot) -> bool:
        return any(snapshot.gpu(key) is g for key in self.never_touch)


SETTINGS_HINT = "(settings: `gputui config`)"


@dataclass(frozen=True)
class GpuShare:
    """One GPU of a placement and what goes on it."""

    index: int
    uuid: str
    usable_bytes: int  # at decision time, for the report
    need_bytes: int
    layers: tuple[int, int] | None = None  # [start, stop) of the decoder layers, when split
    host: str | None = None  # the cluster node holding it (None: this machine)

    @property
    def label(self) -> str:
        """"2", or "node-b:2" on a cluster (the host's name without its node id)."""
        return f"{self.host.split()[0]}:{self.index}" if self.host else str(self.index)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "uuid": self.uuid, "usable_bytes": self.usable_bytes,
                "need_bytes": self.need_bytes, "layers": list(self.layers) if self.layers else None,
                "host": self.host}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GpuShare:
        layers = d.get("layers")
        host = d.get("host")
        return cls(int(d["index"]), str(d["uuid"]), int(d["usable_bytes"]), int(d["need_bytes"]),
                   (int(layers[0]), int(layers[1])) if layers else None, str(host) if host else None)


@dataclass(frozen=True)
class Placement:
    """Where a model goes: one GPU, or several in the order the user listed them."""

    shares: tuple[GpuShare, ...]

    @classmethod
    def single(cls, g: GpuSnapshot, usable: int, need: int) -> Placement:
        return cls((GpuShare(g.index, g.uuid, usable, need, host=g.host),))

    @property
    def gpu_index(self) -> int:  # the first GPU: where a single-GPU model is, where a split one starts
        return self.shares[0].index

    @property
    def gpu_uuid(self) -> str:
        return self.shares[0].uuid

    @property
    def usable_bytes(self) -> int:
        return sum(s.usable_bytes for s in self.shares)

    @property
    def uuids(self) -> list[str]:
        return [s.uuid for s in self.shares]

    @property
    def split(self) -> bool:
        return len(self.shares) > 1

    @property
    def label(self) -> str:
        """"1" or "0+1" ("node-b:2" on a cluster), for tables and messages."""
        return "+".join(s.label for s in self.shares)

    def need_on(self, uuid: str) -> int:
        return sum(s.need_bytes for s in self.shares if s.uuid == uuid)

    def layer_split(self) -> list[list[int]] | None:
        """The worker's layer ranges, one per GPU, when split."""
        if not self.split:
            return None
        return [list(s.layers or (0, 0)) for s in self.shares]


def named_gpus(requested: Sequence[str]) -> list[str]:
    """The GPUs a request names ("auto" and blanks left out): two or more mean a split."""
    return [r for r in requested if r and r != "auto"]


def usable_bytes(g: GpuSnapshot, policy: PlacementPolicy) -> int:
    return (g.free_bytes or 0) - policy.reserve_bytes - policy.margin_bytes


def _label(g: GpuSnapshot) -> str:
    return f"GPU {g.index} ({g.uuid})"


def _foreign(g: GpuSnapshot, our_pids: set[int]) -> list[int]:
    return [p.pid for p in g.processes if p.pid not in our_pids]


def resolve_gpu(snapshot: ServerSnapshot, key: str) -> GpuSnapshot:
    g = snapshot.gpu(key)
    if g is None:
        have = ", ".join(f"{x.index} ({x.uuid}, bus {x.pci_bus_id})" for x in snapshot.gpus) or "none"
        raise PlacementRefused(f"no GPU {key!r} on this machine; GPUs here: {have}")
    return g


def _allowed(snapshot: ServerSnapshot, key: str, policy: PlacementPolicy) -> GpuSnapshot:
    """A GPU the user named, if gputui may use it."""
    g = resolve_gpu(snapshot, key)
    if g.error:
        raise PlacementRefused(f"{_label(g)} cannot be used: {g.error}")
    if policy.forbids(snapshot, g):
        raise PlacementRefused(f"{_label(g)} is in never_touch {SETTINGS_HINT}; name another GPU")
    return g


def choose_gpu(
    snapshot: ServerSnapshot,
    need_bytes: int,
    requested: Sequence[str] = (),
    policy: PlacementPolicy = PlacementPolicy(),
    our_pids: set[int] | None = None,
    split: SplitCosts | None = None,
) -> Placement:
    """The GPU(s) for a model needing `need_bytes`, or PlacementRefused. Several GPUs
    requested: `split` (the model's costs by layer) spreads it over them."""
    ours = our_pids or set()
    if snapshot.error and not snapshot.gpus:
        raise PlacementRefused(f"cannot read the GPUs ({snapshot.error}); nothing can be placed")
    wanted = named_gpus(requested)
    if len(wanted) > 1:
        return _split_placement(snapshot, wanted, policy, split)
    if wanted:
        g = _allowed(snapshot, wanted[0], policy)
        room = usable_bytes(g, policy)
        if need_bytes > room:
            raise PlacementRefused(_short_message(g, need_bytes, room, snapshot, policy, ours))
        return Placement.single(g, room, need_bytes)
    candidates = [g for g in snapshot.gpus if g.error is None and g.free_bytes is not None
                  and not policy.forbids(snapshot, g)]
    if not policy.allow_shared:
        shared = [g for g in candidates if _foreign(g, ours)]
        candidates = [g for g in candidates if not _foreign(g, ours)]
    else:
        shared = []
    fitting = [g for g in candidates if usable_bytes(g, policy) >= need_bytes]
    if fitting:
        best = max(fitting, key=lambda g: usable_bytes(g, policy))
        return Placement.single(best, usable_bytes(best, policy), need_bytes)
    shared_fit = [g for g in shared if usable_bytes(g, policy) >= need_bytes]
    if shared_fit:
        g = max(shared_fit, key=lambda g: usable_bytes(g, policy))
        raise PlacementRefused(
            f"needs {human_bytes(need_bytes)}; it would fit only on {_label(g)}, where another user's "
            f"process runs (pid {', '.join(map(str, _foreign(g, ours)))}); name that GPU, or set allow_shared = true "
            f"{SETTINGS_HINT}"
        )
    if not snapshot.gpus:
        raise PlacementRefused("no GPUs found on this machine")
    best_any = max((g for g in snapshot.gpus if g.error is None), key=lambda g: usable_bytes(g, policy), default=None)
    if best_any is None:
        raise PlacementRefused("no usable GPU: every GPU reports an error")
    raise PlacementRefused(_short_message(best_any, need_bytes, usable_bytes(best_any, policy), snapshot, policy, ours))


def _split_placement(snapshot: ServerSnapshot, wanted: list[str], policy: PlacementPolicy,
                     split: SplitCosts | None) -> Placement:
    """The user listed several GPUs: spread the layers over them, in that order."""
    if split is None:
        raise PlacementRefused(f"this model runs on one GPU; name one of {', '.join(wanted)}")
    gpus = [_allowed(snapshot, key, policy) for key in wanted]
    seen: set[str] = set()
    for key, g in zip(wanted, gpus, strict=True):
        if g.uuid in seen:
            raise PlacementRefused(f"GPU {key!r} is listed twice ({_label(g)}); name each GPU once")
        seen.add(g.uuid)
    if len({g.host for g in gpus}) > 1:  # one worker holds all of a split model's layers
        raise PlacementRefused(f"GPUs {', '.join(wanted)} are on different nodes "
                               f"({', '.join(sorted({str(g.host) for g in gpus}))}); a split model needs one node's GPUs")
    usable = [usable_bytes(g, policy) for g in gpus]
    try:
        ranges = split_layers(split, usable, [f"GPU {g.index}" for g in gpus])
    except SplitRefused as e:
        alone = [g for g in snapshot.gpus if g.error is None and usable_bytes(g, policy) >= split.total_bytes]
        hint = f"; {_label(alone[0])} would fit it alone" if alone else ""
        raise PlacementRefused(f"{e}{hint}") from None
    n = len(gpus)
    return Placement(tuple(
        GpuShare(g.index, g.uuid, u, split.need(i, n, r), (r.start, r.stop), g.host)
        for i, (g, u, r) in enumerate(zip(gpus, usable, ranges, strict=True))))


def _short_message(g: GpuSnapshot, need: int, room: int, snapshot: ServerSnapshot,
                   policy: PlacementPolicy, ours: set[int]) -> str:
    others = [x for x in snapshot.gpus if x.index != g.index and x.error is None
              and usable_bytes(x, policy) >= need and not policy.forbids(snapshot, x)]
    alt = f"; {_label(others[0])} would fit" if others else "; no GPU here has that much free"
    extra = []
    if policy.reserve_bytes:
        extra.append(f"{human_bytes(policy.reserve_bytes)} reserve for others")
    if policy.margin_bytes:
        extra.append(f"{human_bytes(policy.margin_bytes)} margin")
    kept = f" (after {' and '.join(extra)})" if extra else ""
    return (f"{_label(g)}: needs {human_bytes(need)}, {human_bytes(g.free_bytes)} free, "
            f"{human_bytes(max(room, 0))} usable{kept}{alt}")




def host_matches(host: str, node: str) -> bool:
    """Whether a profile's `node` names this host: "node-b", or "worker1 3abfbbf4" by its name or
    by (a full) Ray node id."""
    return host == node or any(part == node or (len(node) >= 8 and node.startswith(part)) for part in host.split())


def on_node(snapshot: ServerSnapshot, node: str | None) -> ServerSnapshot:
    """Only the GPUs of `node` (a host name, or the start of a cluster node id); all when None."""
    if not node:
        return snapshot
    gpus = tuple(g for g in snapshot.gpus if g.host is not None and host_matches(g.host, node))
    if not gpus:
        hosts = sorted({g.host for g in snapshot.gpus if g.host})
        raise PlacementRefused(f"no GPU on node {node!r}" + (f"; the nodes are {', '.join(hosts)}" if hosts
                                                              else "; this server is one machine, not a cluster"))
    return replace(snapshot, gpus=gpus)
