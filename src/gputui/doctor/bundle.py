"""`gputui doctor --bundle FILE`: one archive to attach to a bug report.

Other users' names and command lines are redacted: a bug report must not leak who else runs
what on a shared server.
"""

from __future__ import annotations

import io
import json
import os
import platform
import tarfile
import time
from pathlib import Path
from typing import Any

from gputui.core.snapshot import ServerSnapshot, snapshot_to_json
from gputui.doctor.checks import Finding, _me

ENV_KEYS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "PYTORCH_CUDA_ALLOC_CONF", "CUDA_LAUNCH_BLOCKING",
            "HF_HOME", "TRANSFORMERS_CACHE", "XDG_RUNTIME_DIR")


def redact(doc: dict[str, Any], me: str | None) -> dict[str, Any]:
    users: dict[str, str] = {}
    for g in doc.get("gpus", []):
        for p in g.get("processes", []):
            if p.get("user") != me:
                if p.get("user") is not None:
                    p["user"] = users.setdefault(p["user"], f"user-{len(users) + 1}")
                p["command"] = "<redacted>"
    return doc


def versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("gputui", "torch", "transformers", "textual", "nvidia-ml-py", "safetensors"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def write_bundle(path: Path, snap: ServerSnapshot, findings: list[Finding], events_file: Path | None) -> Path:
    me = _me()
    files: dict[str, bytes] = {
        "status.json": json.dumps(redact(snapshot_to_json(snap), me), indent=2).encode(),
        "findings.json": json.dumps([f.to_json() for f in findings], indent=2).encode(),
        "versions.json": json.dumps({**versions(), "driver": snap.driver_version,
                                     "cuda_driver": snap.cuda_driver_version}, indent=2).encode(),
        "environment.json": json.dumps({k: os.environ.get(k) for k in ENV_KEYS}, indent=2).encode(),
    }
    if events_file is not None and events_file.is_file():
        lines = events_file.read_bytes().splitlines()[-500:]
        files["events.jsonl"] = b"\n".join(lines) + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"gputui-bundle/{name}")
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return path
