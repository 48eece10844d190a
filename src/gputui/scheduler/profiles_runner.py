"""Profiles against the live machine: plan (dry run), apply, compare, and save the current one."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass, replace

from gputui.api.views import ModelState, ModelView, PlanLine, ProfileStep
from gputui.core.checkpoint_info import CheckpointError
from gputui.core.kinds import models_missing
from gputui.core.placement import PlacementPolicy, PlacementRefused, choose_gpu, named_gpus, on_node
from gputui.core.profiles import Profile
from gputui.core.requests import ModelRequest
from gputui.core.snapshot import ServerSnapshot
from gputui.core.units import human_bytes
from gputui.paths import child_env
from gputui.scheduler import memory_checks
from gputui.scheduler.launcher import WORKER_ENV, WorkerLauncher
from gputui.scheduler.scheduler import Scheduler

_demo_paths: dict[str, str] | None = None


def demo_model_paths() -> dict[str, str]:
    """The tiny demo checkpoints, built by a child process (this one never imports torch)."""
    global _demo_paths
    if _demo_paths is None:
        why = models_missing()  # the tiny models are made with torch, as the real ones run on it
        if why:
            raise CheckpointError(f"the demo's models cannot be made: {why}")
        out = subprocess.run([sys.executable, "-m", "gputui.models.tiny"], capture_output=True, text=True,
                             timeout=300, env=child_env(WORKER_ENV))  # a worker's: offline, no GPU
        if out.returncode != 0:
            raise CheckpointError(f"could not build the demo models: {out.stderr.strip().splitlines()[-1:]}")
        _demo_paths = json.loads(out.stdout.strip().splitlines()[-1])
    return _demo_paths



def demo_paths_if_built() -> dict[str, str] | None:
    """The demo models' folders, if this process built them (to save `demo:NAME` back)."""
    return _demo_paths


def model_path(entry: ModelRequest) -> str:
    if entry.path.startswith("demo:"):
        key = entry.path[5:]
        paths = demo_model_paths()
        if key not in paths:
            raise CheckpointError(f"no demo model {key!r}; demo models: {', '.join(paths)}")
        return paths[key]
    return entry.path


def request_for(entry: ModelRequest) -> ModelRequest:
    """The request with a demo:NAME path resolved to the tiny model's folder."""
    return entry.with_path(model_path(entry))


async def plan_profile(profile: Profile, snapshot: ServerSnapshot, policy: PlacementPolicy, launcher: WorkerLauncher,
                       our_pids: set[int] | None = None) -> list[PlanLine]:
    """Place the models one after another on a copy of the snapshot: does the whole profile fit?
    Each model's costs are read by the launcher, where it would load (a Ray node's probe), as the
    load's own preflight reads them: the dry run and the load cannot disagree."""
    snap = snapshot
    lines = []
    for entry in profile.models:
        try:
            req = request_for(entry)
            est, split = await launcher.read_costs(req, entry.dtype_on(launcher.device))
            placement = choose_gpu(on_node(snap, entry.node), est.total_bytes, entry.gpus, policy, our_pids, split)
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


def placed_as_asked(view: ModelView, entry: ModelRequest, snapshot: ServerSnapshot) -> bool:
    if not view.ready or not view.gpus:
        return False
    wanted = named_gpus(entry.gpus)
    if not wanted:
        return True
    gpus = [snapshot.gpu(w) for w in wanted]
    return None not in gpus and tuple(g.uuid for g in gpus if g is not None) == view.uuids


async def apply_profile(profile: Profile, scheduler: Scheduler) -> list[ProfileStep]:
    """Load the models in order; skip those already placed as asked; stop at the first failure
    (what loaded stays up). A model that is up elsewhere stays up where it is, and is named:
    moving it is the user's call (one key), not a side effect of applying a profile. Each step is
    also a `profile_step` event, so every client following the events sees the progress."""
    steps: list[ProfileStep] = []

    def step(model: str, outcome: str, message: str) -> None:
        steps.append(ProfileStep(model, outcome, message))
        scheduler.timeline.record("profile_step", model, profile=profile.name, outcome=outcome, message=message)

    for i, entry in enumerate(profile.models):
        snap = await memory_checks.snapshot(scheduler.telemetry)
        view = scheduler.view(entry.name)
        if view is not None and placed_as_asked(view, entry, snap):
            step(entry.name, "kept", "already placed as asked")
            continue
        if view is not None and view.state in (ModelState.READY, ModelState.LOADING, ModelState.QUEUED) and view.gpus:
            step(entry.name, "kept", f"kept on GPU {view.gpu_label}, where it is loaded; the profile puts it on "
                                     f"GPU {'/'.join(entry.gpus)}: move it (m) or unload it first")
            continue
        try:
            req = await asyncio.to_thread(request_for, entry)
        except CheckpointError as e:
            step(entry.name, "failed", str(e))
        else:
            rec = await scheduler.load(req)
            if rec.state == "ready":
                step(entry.name, "loaded", f"ready on GPU {rec.view().gpu_label} in {rec.load_seconds or 0:.1f}s")
                continue
            step(entry.name, "failed", rec.error or rec.state)
        for rest in profile.models[i + 1:]:
            step(rest.name, "skipped", f"not loaded: {entry.name} failed first")
        break
    return steps


@dataclass(frozen=True)
class Comparison:
    missing: tuple[str, ...]
    misplaced: tuple[str, ...]
    extra: tuple[str, ...]
    ok: tuple[str, ...]


def compare_profile(profile: Profile, views: list[ModelView], snapshot: ServerSnapshot) -> Comparison:
    by_name = {v.name: v for v in views}
    missing, misplaced, ok = [], [], []
    for entry in profile.models:
        view = by_name.get(entry.name)
        if view is None or not view.ready:
            missing.append(entry.name)
        elif placed_as_asked(view, entry, snapshot):
            ok.append(entry.name)
        else:
            misplaced.append(entry.name)
    names = {m.name for m in profile.models}
    extra = [v.name for v in views if v.ready and v.name not in names]
    return Comparison(tuple(missing), tuple(misplaced), tuple(extra), tuple(ok))


def current_profile(views: list[ModelView], name: str, demo_paths: dict[str, str] | None = None) -> Profile:
    """The ready models as a profile, GPUs by UUID with the index as a hint."""
    reverse = {v: f"demo:{k}" for k, v in (demo_paths or {}).items()}
    models = []
    for view in views:
        if not view.ready or not view.gpus:
            continue
        r = view.request
        models.append(ModelRequest(r.name, r.kind, reverse.get(r.path, r.path), view.uuids, r.dtype, r.max_context,
                                   dict(r.generation), gpu_index_hint=view.gpus[0].index))
    if not models:
        raise ValueError("no model is loaded, so there is nothing to save")
    return Profile(name, tuple(models), "saved by gputui")
