"""The four invariants of ../shared/notes/reliability.md, checked after every test that made a
Scheduler (an autouse fixture in tests/conftest.py) and after every step of the property tests.

1. placed bytes <= capacity - headroom, on every GPU;
2. no orphan workers: every live worker is a ready or loading model's, or the launcher's spare;
3. no gputui process holds GPU memory unless its model is ready (or still loading);
4. the dashboard process holds 0 MiB.
"""

from __future__ import annotations

import os
from typing import Any

ACTIVE = ("loading", "ready")


def check_invariants(scheduler: Any, *, settled: bool = False) -> None:
    """`settled`: no command is running, so "loading" is not an excuse for anything."""
    snap = scheduler.telemetry.snapshot()
    policy = scheduler.policy
    active = ("ready",) if settled else ACTIVE
    records = list(scheduler.models.values())
    for g in snap.gpus:
        placed = sum(r.placement.need_on(g.uuid) for r in records
                     if r.state in ACTIVE and r.placement is not None)
        headroom = policy.reserve_bytes + policy.margin_bytes
        assert placed <= (g.total_bytes or 0) - headroom, f"GPU {g.index}: {placed} B placed, over capacity - headroom"
        assert (g.used_bytes or 0) <= (g.total_bytes or 0), f"GPU {g.index}: used over total"
    model_pids = {r.handle.pid for r in records if r.state in active and r.handle is not None}
    live = set(scheduler.launcher.live_pids())
    spare = set(scheduler.launcher.spare_pids())
    orphans = live - model_pids - spare
    assert not orphans, f"orphan workers {sorted(orphans)} (models: {[(r.name, r.state) for r in records]})"
    ours = live | {r.handle.pid for r in records if r.handle is not None} | set(scheduler.launcher.started_pids())
    holders = {p.pid for g in snap.gpus for p in g.processes if p.pid in ours and (p.used_bytes or 0) > 0}
    assert holders <= model_pids, f"workers {sorted(holders - model_pids)} hold GPU memory but no model of theirs is up"
    me = os.getpid()
    mine = [(g.index, p.used_bytes) for g in snap.gpus for p in g.processes if p.pid == me]
    assert not mine, f"the dashboard process holds GPU memory: {mine}"
