"""gputui on a local Ray cluster (CPU, simulated GPUs): how long the cluster takes to come up,
a cluster snapshot at 2, 4 and 6 nodes (the dashboard's refresh and every preflight read one),
and a worker actor from start to hello and to ready (tiny model). For docs/scale.md."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench.common import say

NODE_COUNTS = (2, 4, 6)


async def run(args: argparse.Namespace) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from gputui.cluster.launcher import RayLauncher
    from gputui.cluster.telemetry import ClusterTelemetry
    from gputui.core.requests import ModelRequest
    from gputui.scheduler import Scheduler
    from gputui.scheduler.client import LocalClient
    from gputui.scheduler.timeline import Timeline

    for n in NODE_COUNTS:
        t0 = time.monotonic()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"gputui-host:node-1": 1}})
        for i in range(2, n + 1):
            cluster.add_node(num_cpus=1, resources={f"gputui-host:node-{i}": 1})
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        cluster.wait_for_nodes()
        up = time.monotonic() - t0
        t = time.monotonic()
        telemetry = ClusterTelemetry(ray, simulated_gpus=8)
        first = telemetry.snapshot()
        probes_s = time.monotonic() - t
        times = []
        for _ in range(20):
            t = time.perf_counter()
            telemetry.snapshot()
            times.append(time.perf_counter() - t)
        say(step="cluster", nodes=n, gpus=len(first.gpus), up_s=round(up, 2), probes_start_s=round(probes_s, 2),
            snapshot_ms_median=round(statistics.median(times) * 1000, 1), snapshot_ms_max=round(max(times) * 1000, 1))
        if n == NODE_COUNTS[0]:
            await _worker_times(ray, telemetry, RayLauncher, Scheduler, LocalClient, Timeline, ModelRequest)
        telemetry.close()
        ray.shutdown()
        cluster.shutdown()


async def _worker_times(ray: Any, telemetry: Any, launcher_cls: Any, scheduler_cls: Any, client_cls: Any,
                        timeline_cls: Any, request_cls: Any) -> None:
    launcher = launcher_cls(telemetry, device="cpu", threads=1)
    client = client_cls(scheduler_cls(telemetry, launcher, timeline=timeline_cls()))
    import tempfile
    from pathlib import Path

    from gputui.models.tiny import tiny_chatglm3

    path = str(tiny_chatglm3(Path(tempfile.mkdtemp(prefix="gputui-bench-"))))
    for attempt in range(2):
        t = time.monotonic()
        view = await client.load(request_cls(f"glm{attempt}", "chatglm3", path, max_context=256, node="node-2"))
        say(step="worker_actor", attempt=attempt, state=view.state.value, error=view.error,
            command_to_ready_s=round(time.monotonic() - t, 2), timings=view.timings)
    await client.close()
