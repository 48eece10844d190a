"""The fixed load order, step by step, with the time and memory of each step."""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gputui.core.checkpoint_info import weight_files
from gputui.core.kinds import check_kind, kind_named
from gputui.core.requests import default_dtype
from gputui.models.common.runtime import Runtime
from gputui.worker import faults


def resolve_runtime(path: str) -> type[Runtime]:
    """A kind's runtime class from its "module:Class" (imported here, in the worker only)."""
    module, _, cls = path.partition(":")
    runtime: type[Runtime] = getattr(importlib.import_module(module), cls)
    return runtime


@contextlib.contextmanager
def _step(name: str, report: Callable[..., None], timings: dict[str, float]) -> Iterator[None]:
    """Announce a stage, time it, and mark any failure with the stage it happened in."""
    t = time.monotonic()
    report(name)
    faults.pause(name)
    try:
        yield
    except BaseException as e:
        e.gputui_stage = name  # type: ignore[attr-defined]
        raise
    timings[name] = time.monotonic() - t


def load_model(spec: dict[str, Any], stage: Callable[..., None],
               imports_done: Callable[[], float] | None = None) -> tuple[Runtime, dict[str, Any]]:
    """Returns (runtime, ready report). Exceptions carry the stage they happened in.
    `imports_done`: waits for the model modules imported alongside the first stage."""
    timings: dict[str, float] = {}
    kind = kind_named(spec["kind"])
    path = Path(spec["path"])
    check_kind(kind, path)  # a mismatched folder fails here, before any CUDA work
    device_kind = spec.get("device", "cpu")
    gpu_uuids: list[str] = list(spec.get("gpu_uuids") or [])

    with _step("warming_cublas", stage, timings):
        from gputui.worker import warmup

        if device_kind == "cuda":
            warmup.configure_visible_devices(gpu_uuids)
            if kind.fast_load and weight_files(path)[0] == "safetensors":
                from gputui.models.common import fast_load

                fast_load.pin_ring_ahead()  # host memory, pinned beside the warm-up (see there)
        import torch

        dtype_name = spec.get("dtype") or default_dtype(device_kind)
        dtype = getattr(torch, dtype_name)
        # A split model on the CPU (tests) runs each of its ranges on the one CPU device.
        devices = ([torch.device(f"cuda:{i}") for i in range(len(gpu_uuids))] if device_kind == "cuda"
                   else [torch.device("cpu")] * max(1, len(spec.get("layer_split") or ())))
        distinct = list(dict.fromkeys(devices))
        # fp32 too: the runtime's own float32 bits (RoPE, softmax, logits) use cuBLAS in fp32.
        dtypes = [dtype] if dtype == torch.float32 else [dtype, torch.float32]
        device_info = [warmup.warm_device(d, dtypes) for d in distinct]
    with _step("loading_weights", stage, timings):
        waited = imports_done() if imports_done is not None else 0.0
        runtime = resolve_runtime(kind.runtime).load(spec, devices, dtype)
    if device_kind == "cuda" and kind.fast_load:
        from gputui.models.common import fast_load

        fast_load.drop_ring_ahead()
    with _step("warm_up", stage, timings):
        runtime.warm_up()

    report: dict[str, Any] = {"timings": timings, "waited_for_imports_s": round(waited, 3),
                              "devices": device_info, "dtype": dtype_name,
                              "weight_bytes": runtime.weight_bytes(),
                              "runtime": runtime.info()}
    if device_kind == "cuda":
        import torch

        report["torch_reserved_bytes"] = int(sum(torch.cuda.memory_reserved(d) for d in distinct))
        report["torch_allocated_bytes"] = int(sum(torch.cuda.memory_allocated(d) for d in distinct))
        report["devices_after"] = [
            {"uuid": info.get("uuid"), "free_bytes": int(torch.cuda.mem_get_info(d)[0])}
            for d, info in zip(distinct, device_info, strict=True)
        ]
    return runtime, report
