"""Profiles against the live machine: plan (dry run), apply, compare, and save the current one."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from gputui.core.checkpoint_info import CheckpointError
from gputui.core.kinds import kind_named, preflight_costs
from gputui.core.placement import PlacementPolicy, PlacementRefused, choose_gpu, named_gpus
from gputui.core.profiles import Profile
from gputui.core.requests import ModelRequest
from gputui.core.snapshot import ServerSnapshot
from gputui.core.units import human_bytes
from gputui.scheduler.scheduler import ModelRecord, Scheduler

_demo_paths: dict[str, str] | None = None


def demo_model_paths() -> dict[str, str]:
    """The tiny demo checkpoints, built by a child process (this one never imports torch)."""
    global _demo_paths
    if _demo_paths is None:
        out = subprocess.run([sys.executable, "-m", "gputui.models.tiny"], capture_output=True, text=True,
                             timeout=300, env=_child_env())
        if out.returncode != 0:
            raise CheckpointError(f"could not build the demo models: {out.stderr.strip().splitlines()[-1:]}")
        _demo_paths = json.loads(out.stdout.strip().splitlines()[-1])
    return _demo_paths


def _child_env() -> dict[str, str]:
    import os

    src = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def model_path(entry: ModelRequest) -> str:
    if entry.path.startswith("demo:"):
        key = entry.path[5:]
        paths = demo_model_paths()
        if key not in paths:
            raise CheckpointError(f"no demo model {key!r}; demo models: {', '.join(paths)}")
        return paths[key]
    return entry.path


def request_for(entry: ModelRequest) -> ModelRequest:
    return ModelRequest(name=entry.name, kind=entry.kind, path=model_path(entry), gpus=entry.gpus,
                        dtype=entry.dtype, max_context=entry.max_context, generation=dict(entry.generation))


@dataclass(frozen=True)
class PlanLine:
    model: str
    fits: bool
    gpu_index: int | None
    need_bytes: int | None
    message: str


def plan_profile(profile: Profile, snapshot: ServerSnapshot, policy: PlacementPolicy, device: str,
                 our_pids: set[int] | None = None) -> list[PlanLine]:
    """Place the models one after another on a copy of the snapshot: does the whole profile fit?"""
    snap = snapshot
    lines = []
    for entry in profile.models:
        try:
            req = request_for(entry)
            dtype = entry.dtype_on(device)
            est, split = preflight_costs(kind_named(entry.kind), Path(req.path), dtype, entry.max_context,
                                         entry.gpus)
            placement = choose_gpu(snap, est.total_bytes, entry.gpus, policy, our_pids, split)
        except PlacementRefused as e:
            hint = _hint(entry, snapshot)
            lines.append(PlanLine(entry.name, False, None, None, f"{e}{hint}"))
            continue
        except Exception as e:  # noqa: BLE001 - a bad checkpoint is a NO line, never a traceback
            lines.append(PlanLine(entry.name, False, None, None, str(e) if isinstance(e, (CheckpointError, OSError))
                                  else f"{type(e).__name__}: {e}"))
            continue
        gpus = tuple(replace(g, free_bytes=(g.free_bytes or 0) - placement.need_on(g.uuid)) for g in snap.gpus)
        snap = replace(snap, gpus=gpus)
        need = sum(s.need_bytes for s in placement.shares)
        lines.append(PlanLine(entry.name, True, placement.gpu_index, need,
                              f"fits on GPU {placement.label}: needs {human_bytes(need)}, "
                              f"{human_bytes(placement.usable_bytes)} usable"))
    return lines


def _hint(entry: ModelRequest, snapshot: ServerSnapshot) -> str:
    if entry.gpu_index_hint is not None and any(g.lower().startswith("gpu-") for g in entry.gpus):
        if not any(snapshot.gpu(g) for g in entry.gpus):
            return f" (the profile's GPU was GPU {entry.gpu_index_hint} when saved)"
    return ""


def placed_as_asked(rec: ModelRecord, entry: ModelRequest, snapshot: ServerSnapshot) -> bool:
    if rec.state != "ready" or rec.placement is None:
        return False
    wanted = named_gpus(entry.gpus)
    if not wanted:
        return True
    gpus = [snapshot.gpu(w) for w in wanted]
    return None not in gpus and [g.uuid for g in gpus if g is not None] == rec.placement.uuids


async def apply_profile(profile: Profile, scheduler: Scheduler,
                        progress: Callable[[str, str], None] = lambda m, s: None) -> list[ModelRecord]:
    """Load the models in order; skip those already placed as asked; stop at the first failure
    (what loaded stays up). A model that is up elsewhere stays up where it is, and is named:
    moving it is the user's call (one key), not a side effect of applying a profile."""
    done: list[ModelRecord] = []
    for entry in profile.models:
        snap = await asyncio.to_thread(scheduler.telemetry.snapshot)
        rec = scheduler.models.get(entry.name)
        if rec is not None and placed_as_asked(rec, entry, snap):
            progress(entry.name, "already placed as asked")
            done.append(rec)
            continue
        if rec is not None and rec.state in ("ready", "loading", "queued") and rec.placement is not None:
            progress(entry.name, f"kept on GPU {rec.placement.label}, where it is loaded; the profile puts it on "
                                 f"GPU {'/'.join(entry.gpus)}: move it (m) or unload it first")
            continue
        try:
            req = await asyncio.to_thread(request_for, entry)
        except CheckpointError as e:
            progress(entry.name, f"failed: {e}")
            break
        progress(entry.name, "loading")
        rec = await scheduler.load(req)
        done.append(rec)
        progress(entry.name, rec.state if rec.state == "ready" else f"failed: {rec.error}")
        if rec.state != "ready":
            break
    return done


@dataclass(frozen=True)
class Comparison:
    missing: tuple[str, ...]
    misplaced: tuple[str, ...]
    extra: tuple[str, ...]
    ok: tuple[str, ...]


def compare_profile(profile: Profile, scheduler: Scheduler, snapshot: ServerSnapshot) -> Comparison:
    missing, misplaced, ok = [], [], []
    for entry in profile.models:
        rec = scheduler.models.get(entry.name)
        if rec is None or rec.state != "ready":
            missing.append(entry.name)
        elif placed_as_asked(rec, entry, snapshot):
            ok.append(entry.name)
        else:
            misplaced.append(entry.name)
    names = {m.name for m in profile.models}
    extra = [r.name for r in scheduler.models.values() if r.state == "ready" and r.name not in names]
    return Comparison(tuple(missing), tuple(misplaced), tuple(extra), tuple(ok))


def current_profile(scheduler: Scheduler, snapshot: ServerSnapshot, name: str,
                    demo_paths: dict[str, str] | None = None) -> Profile:
    """The ready models as a profile, GPUs by UUID with the index as a hint."""
    reverse = {v: f"demo:{k}" for k, v in (demo_paths or {}).items()}
    models = []
    for rec in scheduler.models.values():
        if rec.state != "ready" or rec.placement is None:
            continue
        r = rec.request
        models.append(ModelRequest(r.name, r.kind, reverse.get(r.path, r.path), tuple(rec.placement.uuids),
                                   r.dtype, r.max_context, dict(r.generation), gpu_index_hint=rec.placement.gpu_index))
    if not models:
        raise ValueError("no model is loaded, so there is nothing to save")
    return Profile(name, tuple(models), "saved by gputui")
