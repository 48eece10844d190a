"""What every suite shares: one JSON line per result, the machine and versions it ran on, the
real-size checkpoints, and another user's process that fills a GPU."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_context: dict[str, Any] = {}


def machine() -> dict[str, Any]:
    """GPU (from NVML), driver and library versions; printed once per run, and put on every line."""
    info: dict[str, Any] = {"python": platform.python_version(), "host_cpus": _cpus()}
    try:
        import pynvml  # noqa: TID251 - the bench reads the GPU's name and driver directly

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        info.update(gpu=pynvml.nvmlDeviceGetName(h), gpus=pynvml.nvmlDeviceGetCount(),
                    driver=pynvml.nvmlSystemGetDriverVersion(),
                    gpu_mib=pynvml.nvmlDeviceGetMemoryInfo(h).total >> 20)
    except Exception as e:  # noqa: BLE001 - no GPU: the CPU suites still run
        info["gpu"] = f"none ({type(e).__name__})"
    import importlib.metadata as md

    for name in ("torch", "transformers", "triton", "textual", "gputui"):
        try:
            info[name] = md.version(name)
        except md.PackageNotFoundError:
            info[name] = None
    return info


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def begin(suite: str, command: str) -> None:
    _context.clear()
    _context.update(suite=suite, command=command)
    say(step="machine", **machine())


def say(**fields: Any) -> None:
    """One result: the suite and command that made it, then its own fields."""
    print(json.dumps({**_context, "t": round(time.time(), 3), **fields}, default=str), flush=True)


def checkpoints(root: Path) -> Path:
    """Real-shape random-weight ChatGLM3-6B and BLIP2-OPT-2.7B under `root`, made once."""
    if not (root / "chatglm3-6b" / "config.json").is_file() or not (root / "blip2-opt-2.7b" / "config.json").is_file():
        subprocess.run([sys.executable, str(HERE / "make_checkpoints.py"), str(root)], check=True)
    return root


def replay_seconds(graph: Any, reps: int = 100) -> float:
    """Seconds per replay of a captured CUDA graph (one replay first, then `reps` timed)."""
    import torch

    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000 / reps


def hog(leave_mib: int) -> tuple[subprocess.Popen[str], int]:
    """Another user's process filling GPU 0 down to `leave_mib` free; (process, free MiB left)."""
    p = subprocess.Popen([sys.executable, str(HERE / "hog.py"), "--leave-mib", str(leave_mib)],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline() if p.stdout else ""
    return p, int(line.split()[1]) if line.startswith("ready") else -1


async def chat_text(client: Any, name: str, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Send one request (a wire-form dict) through the client; (the reply's text, its last event
    as a dict: the done's stats, or the error's message)."""
    from gputui.api.chat import ChatRequest

    text, last = "", {}
    async for e in client.chat(name, ChatRequest.from_json(request)):
        text += e.text if e.event == "text" else ""
        last = {"event": e.event, **dict(e.stats), **({"message": e.text} if e.event == "error" else {})}
    return text, last
