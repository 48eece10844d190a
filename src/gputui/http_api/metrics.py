"""Prometheus metrics, in its text format by prometheus_client: `GET /metrics` on the API (same
socket, same peer check) and `gputui metrics` (one shot to stdout, for node_exporter's textfile
collector). GPU and model gauges are read at scrape time from the same snapshot and views the
dashboard shows; request, token and latency figures are counted as the API serves; crashes and
preflight refusals are counted from the server's event stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gputui.api.client import Client
from gputui.api.views import Event, ModelState
from gputui.core.memory import headroom_bytes
from gputui.core.snapshot import ServerSnapshot

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
GPU_LABELS = ("uuid", "index", "host")


class _Live(Collector):
    """The gauges that describe now: each GPU and each model, read when Prometheus asks."""

    def __init__(self, snapshot: Callable[[], ServerSnapshot | None], client: Client | None,
                 queue_depth: Callable[[], dict[str, int]]) -> None:
        self._snapshot, self._client, self._queue_depth = snapshot, client, queue_depth

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self._snapshot()
        used = GaugeMetricFamily("gputui_gpu_memory_used_bytes", "GPU memory in use (all users)", labels=GPU_LABELS)
        total = GaugeMetricFamily("gputui_gpu_memory_total_bytes", "GPU memory", labels=GPU_LABELS)
        room = GaugeMetricFamily("gputui_gpu_headroom_bytes",
                                 "what a new process can still use after its CUDA context and first cuBLAS call",
                                 labels=GPU_LABELS)
        util = GaugeMetricFamily("gputui_gpu_utilization_ratio", "GPU busy, 0-1", labels=GPU_LABELS)
        for g in snap.gpus if snap is not None else ():
            labels = [g.uuid, str(g.index), g.host or ""]
            for family, value in ((used, g.used_bytes), (total, g.total_bytes), (room, headroom_bytes(g.free_bytes)),
                                  (util, None if g.util_percent is None else g.util_percent / 100)):
                if value is not None:
                    family.add_metric(labels, value)
        yield from (used, total, room, util)
        if self._client is None:
            return
        state = GaugeMetricFamily("gputui_model_state", "1 for the state each model is in", labels=("model", "state"))
        predicted = GaugeMetricFamily("gputui_model_predicted_bytes", "the preflight's estimate", labels=("model",))
        measured = GaugeMetricFamily("gputui_model_measured_bytes", "held by its worker, from NVML", labels=("model",))
        load = GaugeMetricFamily("gputui_model_load_seconds", "command to ready, last load", labels=("model",))
        for v in self._client.models():
            for s in ModelState:
                state.add_metric([v.name, s.value], 1 if v.state is s else 0)
            for family, value in ((predicted, v.predicted_bytes), (measured, v.measured_bytes), (load, v.load_seconds)):
                if value is not None:
                    family.add_metric([v.name], value)
        depth = GaugeMetricFamily("gputui_api_requests_under_way", "API requests being answered or waiting, by model",
                                  labels=("model",))
        for model, n in self._queue_depth().items():
            depth.add_metric([model], n)
        yield from (state, predicted, measured, load, depth)


class Metrics:
    def __init__(self, snapshot: Callable[[], ServerSnapshot | None], client: Client | None = None) -> None:
        self.registry = CollectorRegistry()
        self.queue_depth: Callable[[], dict[str, int]] = dict  # the API's handlers set it
        self.registry.register(_Live(snapshot, client, lambda: self.queue_depth()))
        r = self.registry
        self.requests = Counter("gputui_api_requests", "chat completion requests, by how they ended",
                                ("model", "status"), registry=r)
        self.tokens = Counter("gputui_generated_tokens", "tokens generated for API requests", ("model",), registry=r)
        self.ttft = Histogram("gputui_time_to_first_token_seconds", "request to first token", ("model",),
                              buckets=LATENCY_BUCKETS, registry=r)
        self.per_token = Histogram("gputui_time_per_output_token_seconds", "between tokens, per request",
                                   ("model",), buckets=LATENCY_BUCKETS, registry=r)
        self.crashes = Counter("gputui_worker_crashes", "workers that ended on their own", ("model",), registry=r)
        self.refusals = Counter("gputui_preflight_refusals", "loads refused at preflight", ("model",), registry=r)

    def reply_done(self, model: str, status: str, stats: dict[str, Any]) -> None:
        self.requests.labels(model, status).inc()
        n = stats.get("new_tokens")
        if isinstance(n, int) and n > 0:
            self.tokens.labels(model).inc(n)
        ttft, rate = stats.get("ttft_s"), stats.get("tokens_per_s")
        if isinstance(ttft, (int, float)):
            self.ttft.labels(model).observe(ttft)
        if isinstance(rate, (int, float)) and rate > 0:
            self.per_token.labels(model).observe(1 / rate)

    def saw(self, ev: Event) -> None:
        """One event of the server's stream: a crash, or a load refused at preflight."""
        if ev.type != "timeline" or ev.model is None:
            return
        what = ev.data.get("event")
        if what == "crashed":
            self.crashes.labels(ev.model).inc()
        elif what == "failed" and str(ev.data.get("error", "")).startswith("refused at preflight"):
            self.refusals.labels(ev.model).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
