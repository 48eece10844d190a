"""`gputui doctor --bundle FILE`: one archive to attach to a bug report.

A bug report must not leak who else runs what on a shared server, nor the user's own secrets:
other users' names become `user-1`, `user-2`... in every file of the bundle (status, findings,
events), their command lines are dropped, and secrets in our own command lines and
environment (`*_TOKEN=`, `*_KEY=`, `*SECRET*`, `--api-key VALUE`, ...) become `<redacted>`.
The archive itself is written 0600.
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import tarfile
import time
from pathlib import Path
from typing import Any

from gputui.core.snapshot import ServerSnapshot, snapshot_to_json
from gputui.doctor.checks import Finding, _me
from gputui.paths import open_private

ENV_KEYS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "PYTORCH_CUDA_ALLOC_CONF", "CUDA_LAUNCH_BLOCKING",
            "HF_HOME", "TRANSFORMERS_CACHE", "XDG_RUNTIME_DIR")
_SECRET_WORD = r"[A-Za-z0-9_-]*(?:TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL)[A-Za-z0-9_-]*"
_SECRET_ASSIGN = re.compile(rf"(?i)\b({_SECRET_WORD})=(\S+)")
_SECRET_FLAG = re.compile(rf"(?i)(--{_SECRET_WORD})(=|\s+)(\S+)")


def redact_secrets(text: str) -> str:
    """`HF_TOKEN=abc` -> `HF_TOKEN=<redacted>`; `--api-key abc` -> `--api-key <redacted>`."""
    text = _SECRET_ASSIGN.sub(lambda m: f"{m.group(1)}=<redacted>", text)
    return _SECRET_FLAG.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", text)


class Redactor:
    """Replaces other users' names (as whole words) by stable aliases, and secrets by <redacted>."""

    def __init__(self, snap: ServerSnapshot, me: str | None) -> None:
        self.me = me
        self.aliases: dict[str, str] = {}
        for g in snap.gpus:
            for p in g.processes:
                if p.user is not None and p.user != me:
                    self.aliases.setdefault(p.user, f"user-{len(self.aliases) + 1}")
        names = sorted(self.aliases, key=len, reverse=True)  # longest first: "al" inside "alice"
        self._names = re.compile("|".join(rf"(?<![\w.-]){re.escape(n)}(?![\w.-])" for n in names)) if names else None

    def text(self, s: str) -> str:
        if self._names is not None:
            s = self._names.sub(lambda m: self.aliases[m.group(0)], s)
        return redact_secrets(s)

    def doc(self, value: Any) -> Any:
        """Every string inside a JSON-like value."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.doc(v) for v in value]
        if isinstance(value, dict):
            return {k: self.doc(v) for k, v in value.items()}
        return value

    def status(self, doc: dict[str, Any]) -> dict[str, Any]:
        for g in doc.get("gpus", []):
            for p in g.get("processes", []):
                if p.get("user") != self.me:
                    p["command"] = "<redacted>"  # what another user runs is theirs
        return self.doc(doc)  # type: ignore[no-any-return]


def versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("gputui", "torch", "transformers", "textual", "nvidia-ml-py", "safetensors"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def bundle_path(path: Path) -> Path:
    """A folder gets a dated file name inside it."""
    if path.is_dir():
        return path / time.strftime("gputui-bundle-%Y%m%d-%H%M%S.tar.gz")
    return path


def write_bundle(path: Path, snap: ServerSnapshot, findings: list[Finding], events_file: Path | None) -> Path:
    r = Redactor(snap, _me())
    files: dict[str, bytes] = {
        "status.json": json.dumps(r.status(snapshot_to_json(snap)), indent=2).encode(),
        "findings.json": json.dumps(r.doc([f.to_json() for f in findings]), indent=2).encode(),
        "versions.json": json.dumps({**versions(), "driver": snap.driver_version,
                                     "cuda_driver": snap.cuda_driver_version}, indent=2).encode(),
        "environment.json": json.dumps(r.doc({k: os.environ.get(k) for k in ENV_KEYS}), indent=2).encode(),
    }
    if events_file is not None and events_file.is_file():
        lines = events_file.read_bytes().splitlines()[-500:]
        files["events.jsonl"] = "".join(r.text(x.decode("utf-8", "replace")) + "\n" for x in lines).encode()
    path = bundle_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"gputui-bundle/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(data))
    return path
