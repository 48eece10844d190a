"""Wiring a scheduler for the CLI and the TUI: the real launcher on NVML, the simulated one
for --demo, the event timeline in the user's data folder."""

from __future__ import annotations

from gputui.core.placement import PlacementPolicy
from gputui.hardware.base import GpuTelemetry
from gputui.hardware.simulated import SimulatedServer
from gputui.paths import timeline_path
from gputui.scheduler.launcher import LocalLauncher, WorkerLauncher
from gputui.scheduler.scheduler import Scheduler
from gputui.scheduler.simulated_launcher import SimulatedLauncher
from gputui.scheduler.timeline import Timeline


def make_scheduler(telemetry: GpuTelemetry, *, spare: bool = True, policy: PlacementPolicy | None = None,
                   timeline: Timeline | None = None, launcher: WorkerLauncher | None = None,
                   default_keep_alive_s: float | None = None, evict_idle: bool = False) -> Scheduler:
    """`launcher`: one that places workers elsewhere (a Ray cluster); else this machine's.
    `policy` and `default_keep_alive_s` come from the user's settings (cli.common.load_settings)."""
    if launcher is None:
        launcher = (SimulatedLauncher(telemetry, spare=spare, threads=1) if isinstance(telemetry, SimulatedServer)
                    else LocalLauncher(spare=spare))
    return Scheduler(telemetry, launcher, policy=policy or PlacementPolicy(),
                     timeline=timeline or Timeline(timeline_path(demo=telemetry.backend == "simulated")),
                     default_keep_alive_s=default_keep_alive_s, evict_idle=evict_idle)
