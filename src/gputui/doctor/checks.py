"""`gputui doctor`: findings about this machine, each with severity, evidence and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gputui.core.memory import NEW_PROCESS_FIRST_MATMUL_BYTES
from gputui.core.snapshot import ServerSnapshot
from gputui.core.units import mib

CUDA_CHECK_TIMEOUT_S = 90


@dataclass(frozen=True)
class Finding:
    severity: str  # "ok" | "info" | "warning" | "error"
    title: str
    evidence: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def gpu_findings(snap: ServerSnapshot, our_user: str | None = None) -> list[Finding]:
    out: list[Finding] = []
    me = our_user or _me()
    for g in snap.gpus:
        label = f"GPU {g.index} ({g.name}, {g.uuid})"
        if g.error:
            out.append(Finding("error", f"{label} cannot be read", g.error, "ask the admin to check the GPU (nvidia-smi -q)"))
            continue
        if g.first_matmul_would_fail:
            out.append(Finding("error", f"{label} is too full for a new process",
                               f"{mib(g.free_bytes)} free; a context and first cuBLAS call need about "
                               f"{mib(NEW_PROCESS_FIRST_MATMUL_BYTES)}",
                               "free memory there, or place new models on another GPU"))
        else:
            out.append(Finding("ok", f"{label} has room for a new process", f"{mib(g.free_bytes)} free"))
        # our own model workers are the user's, whatever name the process table gives them
        foreign = [p for p in g.processes if not p.ours and p.user not in (me, None)]
        if foreign:
            who = ", ".join(f"pid {p.pid} ({p.user}, {mib(p.used_bytes)})" for p in foreign)
            out.append(Finding("info", f"{label} is shared with other users", who,
                               "gputui's auto placement avoids it unless allowed"))
        hidden = [p for p in g.processes if p.user is None]
        if hidden:
            out.append(Finding("info", f"{label}: {len(hidden)} process(es) from outside this container",
                               ", ".join(f"pid {p.pid}" for p in hidden), "their owners cannot be shown here"))
        if g.compute_mode in ("Exclusive Process", "Exclusive Thread", "Prohibited"):
            out.append(Finding("warning", f"{label} compute mode is {g.compute_mode}",
                               "a second CUDA context on this GPU will be refused",
                               "one model per GPU, or ask the admin for Default mode"))
        if g.mig_enabled:
            out.append(Finding("warning", f"{label} is in MIG mode", "CUDA sees MIG instances, not the whole GPU",
                               "name MIG instances by their UUID (MIG-...) in CUDA_VISIBLE_DEVICES"))
        if g.persistence is False:
            out.append(Finding("info", f"{label}: persistence mode off", "first CUDA init can take seconds longer",
                               "harmless; the admin can enable it"))
        if g.cuda_index_default != g.cuda_index_pci:
            out.append(Finding("warning", f"{label}: CUDA and nvidia-smi number it differently",
                               f"cuda:{g.cuda_index_default} by default, cuda:{g.cuda_index_pci} under PCI_BUS_ID",
                               "export CUDA_DEVICE_ORDER=PCI_BUS_ID (gputui's workers always do)"))
    return out


def env_findings(snap: ServerSnapshot) -> list[Finding]:
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    order = os.environ.get("CUDA_DEVICE_ORDER")
    mapping = "; ".join(f"nvidia-smi {g.index} -> cuda:{g.cuda_index_pci if order == 'PCI_BUS_ID' else g.cuda_index_default}"
                        for g in snap.gpus)
    sev = "ok" if order == "PCI_BUS_ID" else "info"
    return [Finding(sev, "CUDA_VISIBLE_DEVICES / CUDA_DEVICE_ORDER",
                    f"CUDA_VISIBLE_DEVICES={cvd if cvd is not None else '(unset)'}, "
                    f"CUDA_DEVICE_ORDER={order or '(unset: FASTEST_FIRST)'}; {mapping or 'no GPUs'}",
                    "" if order == "PCI_BUS_ID" else "set CUDA_DEVICE_ORDER=PCI_BUS_ID so indices match nvidia-smi")]


def nv_cache_finding(home: Path | None = None) -> Finding:
    nv = (home or Path.home()) / ".nv"
    if not nv.exists():
        return Finding("ok", "CUDA cache folder (~/.nv)", f"{nv} does not exist yet")
    problems = []
    for p in [nv, *nv.rglob("*")][:2000]:
        try:
            st = p.stat()
        except OSError:
            continue
        if st.st_uid != os.getuid() or not os.access(p, os.W_OK):
            problems.append(str(p))
    if problems:
        return Finding("warning", "CUDA cache folder (~/.nv) is not writable by you",
                       f"{len(problems)} entries, e.g. {problems[0]} (common after running once as root)",
                       f"sudo chown -R $USER {nv}  (or remove it)")
    return Finding("ok", "CUDA cache folder (~/.nv)", f"{nv} is yours and writable")


CHILD = r"""
import json, torch
out = {"torch": torch.__version__, "cuda": torch.version.cuda, "devices": []}
try:
    n = torch.cuda.device_count()
    for i in range(n):
        a = torch.randn(256, 256, device=f"cuda:{i}"); (a @ a).sum().item()
        out["devices"].append({"index": i, "ok": True, "name": torch.cuda.get_device_name(i)})
except Exception as e:
    out["devices"].append({"ok": False, "error": f"{type(e).__name__}: {e}"[:400]})
try:
    import triton
    out["triton"] = triton.__version__
except Exception as e:
    out["triton"], out["triton_error"] = None, f"{type(e).__name__}: {e}"[:200]
import os, shutil
out["cc"] = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
print(json.dumps(out))
"""


def cuda_subprocess_findings(snap: ServerSnapshot) -> list[Finding]:
    """A spawned child initialises CUDA and runs a matmul on each GPU: this process never does."""
    env = {**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    try:
        r = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                           timeout=CUDA_CHECK_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return [Finding("error", "CUDA check", f"no answer in {CUDA_CHECK_TIMEOUT_S}s", "a GPU may be hung; see nvidia-smi")]
    if r.returncode != 0 or not r.stdout.strip():
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return [Finding("error", "CUDA check", f"the child failed: {last}", "is torch installed with CUDA support?")]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    out = [_driver_finding(snap, info.get("cuda"), info.get("torch"))]
    for d in info["devices"]:
        if d.get("ok"):
            out.append(Finding("ok", f"cuda:{d['index']} runs a matmul", d.get("name", "")))
        else:
            out.append(Finding("error", "a spawned process could not run a matmul", d.get("error", "?"),
                               "see `gputui doctor --explain` with that message"))
    out.append(decode_finding(info))
    if not info["devices"]:
        out.append(Finding("warning", "torch sees no GPU", f"torch {info.get('torch')} (CUDA {info.get('cuda')})",
                           "a CPU-only torch build, or CUDA_VISIBLE_DEVICES hides every GPU"))
    return out


def decode_finding(info: dict[str, Any]) -> Finding:
    """Can workers here build the fused ChatGLM3 decode step (Triton kernels)?"""
    title = "fast ChatGLM3 decode (fused Triton step)"
    if not info.get("triton"):
        return Finding("warning", title, f"triton cannot be imported ({info.get('triton_error', 'not installed')})",
                       "install the triton that matches your torch: without it ChatGLM3 decodes on the stock "
                       "graph (~120 instead of ~195 tok/s on an H100)")
    if not info.get("cc"):
        return Finding("warning", title, f"triton {info['triton']} is here, but no C compiler (cc, gcc, clang or $CC)",
                       "Triton builds small launchers with one: install gcc, or ChatGLM3 falls back to the stock "
                       "decode graph")
    return Finding("ok", title, f"triton {info['triton']}, C compiler {info['cc']}")


def _driver_finding(snap: ServerSnapshot, torch_cuda: str | None, torch_version: str | None) -> Finding:
    drv = snap.cuda_driver_version
    if not torch_cuda:
        return Finding("warning", "torch has no CUDA", f"torch {torch_version} is a CPU build", "install a CUDA build of torch")
    if drv and _ver(torch_cuda) > _ver(drv):
        return Finding("error", "driver too old for torch", f"torch built for CUDA {torch_cuda}; driver supports {drv}",
                       "update the driver or install torch for CUDA <= " + drv)
    return Finding("ok", "driver and torch CUDA versions", f"driver supports CUDA {drv}; torch built for {torch_cuda}")


def _ver(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".")[:2] if x.isdigit())


def gputui_env_findings() -> list[Finding]:
    """The GPUTUI_* variables this process was given (core/env.py lists every one), each with
    what it changes: a switch left on from a benchmark explains a slow decode."""
    from gputui.core import env

    return [Finding("info", f"{v.name}={value}", f"set here; {_meaning(v.meaning)}") for v, value in env.set_now()]


def _meaning(text: str) -> str:
    """core/env.py writes a meaning as "VALUE: what it does" (or plain prose): said after the
    finding's "NAME=VALUE" title, "0: decode ..." read as "GPUTUI_FUSED_DECODE=0: 0: decode"."""
    value, sep, rest = text.partition(": ")
    return f"{value} means {rest}" if sep and " " not in value else text


def models_findings() -> list[Finding]:
    """Whether this Python can run the models' workers (a base install watches GPUs only)."""
    from gputui.core.kinds import models_missing

    why = models_missing()
    if why is not None:
        return [Finding("info", "model runtime not installed", why, "pip install 'gputui[models]'")]
    return [Finding("ok", "model runtime", "torch, transformers and the rest are installed"), fast_decode_finding()]


# The fused decode needs Triton 3.3 (first shipped with torch 2.7): before, its kernels' PDL and
# interpreter features are missing and the worker would fall back at its check.
TRITON_FLOOR = (3, 3)


def fast_decode_finding() -> Finding:
    """Whether ChatGLM3 decodes on the fused Triton kernels, and why not (read without importing
    torch or Triton: versions from the installed metadata)."""
    import importlib.metadata

    from gputui.core import env

    if not env.switched_on("GPUTUI_FUSED_DECODE"):
        return Finding("info", "fused decode off", "GPUTUI_FUSED_DECODE=0: ChatGLM3 decodes on the plain PyTorch "
                       "step (slower, one CUDA graph per batch size)", "unset GPUTUI_FUSED_DECODE")
    try:
        version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return Finding("warning", "fused decode off", "triton is not installed: ChatGLM3 decodes on the plain "
                       "PyTorch step", "pip install 'gputui[models]' (triton >= 3.3)")
    parts = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
    if parts < TRITON_FLOOR:
        return Finding("warning", "fused decode off", f"triton {version} is older than 3.3: ChatGLM3 decodes on "
                       "the plain PyTorch step", "install torch >= 2.7 (it brings triton >= 3.3)")
    return Finding("ok", "fused decode", f"triton {version}: ChatGLM3 decodes on the fused kernels (checked "
                   "against the plain step at each load)")


def kind_plugin_findings() -> list[Finding]:
    """Model kinds other packages declare that did not load (core/kinds.py reads them)."""
    from gputui.core.kinds import PLUGIN_ERRORS, read_plugins

    read_plugins()
    return [Finding("warning", "a model kind plugin did not load", line, "fix or uninstall that package")
            for line in PLUGIN_ERRORS]


def run_checks(snap: ServerSnapshot, spawn_cuda_check: bool = True) -> list[Finding]:
    out: list[Finding] = []
    if snap.error and not snap.gpus:
        out.append(Finding("error", "NVIDIA driver / NVML", snap.error, "install the NVIDIA driver, or try `gputui --demo`"))
        return out
    sim = snap.simulated
    out.append(Finding("ok" if not sim else "info", "NVIDIA driver / NVML",
                       f"driver {snap.driver_version}, CUDA {snap.cuda_driver_version}" + (" (SIMULATED)" if sim else "")))
    out += gpu_findings(snap)
    out += env_findings(snap)
    out += gputui_env_findings()
    out += kind_plugin_findings()
    out += models_findings()
    out.append(nv_cache_finding())
    if spawn_cuda_check and not sim:
        out += cuda_subprocess_findings(snap)
    elif sim:
        out.append(Finding("info", "CUDA check skipped", "simulated server: there is no GPU to run a matmul on"))
    return out


def _me() -> str | None:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return None
