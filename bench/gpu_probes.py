#!/usr/bin/env python3
"""Low-level measurements on a real GPU, each in a fresh process (device only).

  context   - NVML memory of a new process: bare context, first matmul, first attention call
  cublas    - free memory at which a first matmul fails, with the exact error text
  seed      - the original report: two models in one process on a GPU another process has
              nearly filled -> the cuBLAS error at the first forward
Each prints one JSON line on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hog import start as start_hog  # noqa: E402

PY = sys.executable


def nvml_used_by(pid: int) -> int | None:
    import pynvml  # noqa: TID251 - bench script on the device

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
        if p.pid == pid:
            return int(p.usedGpuMemory)
    return None


def free_mib() -> int:
    import pynvml  # noqa: TID251

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    return int(pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2).free) >> 20


CHILD_CONTEXT = r"""
import json, os, sys, torch, torch.nn.functional as F
sys.path.insert(0, os.environ["BENCH_DIR"])
from gpu_probes import nvml_used_by
pid = os.getpid(); out = {}
torch.cuda.init(); x = torch.empty(1 << 20, device="cuda"); torch.cuda.synchronize()
out["context"] = nvml_used_by(pid)
a = torch.randn(64, 64, device="cuda", dtype=torch.bfloat16); (a @ a).sum().item()
out["after_matmul_bf16"] = nvml_used_by(pid)
b = torch.randn(64, 64, device="cuda"); (b @ b).sum().item()
out["after_matmul_fp32"] = nvml_used_by(pid)
q = torch.randn(1, 2, 16, 64, device="cuda", dtype=torch.bfloat16)
F.scaled_dot_product_attention(q, q, q, is_causal=True).sum().item()
out["after_sdpa"] = nvml_used_by(pid)
print(json.dumps(out))
"""

CHILD_WAIT_THEN = r"""
import json, os, sys, torch, torch.nn.functional as F
mode = sys.argv[1]
torch.cuda.init(); x = torch.empty(1 << 20, device="cuda"); torch.cuda.synchronize()
if mode == "sdpa":  # cuBLAS warmed, attention not yet
    a = torch.randn(64, 64, device="cuda", dtype=torch.bfloat16); (a @ a).sum().item()
print("ctx", flush=True); sys.stdin.readline()
free = torch.cuda.mem_get_info()[0] >> 20
try:
    if mode == "sdpa":
        q = torch.randn(1, 2, 16, 64, device="cuda", dtype=torch.bfloat16)
        F.scaled_dot_product_attention(q, q, q, is_causal=True).sum().item()
    else:
        a = torch.randn(64, 64, device="cuda", dtype=torch.bfloat16); (a @ a).sum().item()
    print(json.dumps({"free_mib": free, "ok": True}))
except Exception as e:
    print(json.dumps({"free_mib": free, "ok": False, "error": f"{type(e).__name__}: {e}"[:600]}))
"""





def probe_context() -> dict:
    env = {**os.environ, "BENCH_DIR": str(HERE)}
    r = subprocess.run([PY, "-c", CHILD_CONTEXT], capture_output=True, text=True, env=env, timeout=120)
    data = json.loads(r.stdout.strip().splitlines()[-1])
    mib = {k: v >> 20 for k, v in data.items() if v is not None}
    mib["first_matmul_delta"] = mib["after_matmul_bf16"] - mib["context"]
    mib["sdpa_delta"] = mib["after_sdpa"] - mib["after_matmul_fp32"]
    return mib


def child_then_hog(args: list[str], leave_mib: int, env: dict[str, str] | None = None) -> tuple[dict, int]:
    """Start a child that prints one line when it is set up and waits; fill the GPU down to
    `leave_mib`; tell the child to go; return (its JSON answer, free MiB the hog left)."""
    child = subprocess.Popen([PY, "-c", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    assert child.stdout and child.stdin
    hog = None
    try:
        if not child.stdout.readline().strip():
            return {"error": (child.stderr.read() if child.stderr else "")[-1500:]}, -1
        hog, hog_free = start_hog(leave_mib)
        child.stdin.write("go\n")
        child.stdin.flush()
        line = child.stdout.readline()
        return (json.loads(line) if line.strip() else {"error": (child.stderr.read() if child.stderr else "?")[-1500:]}), hog_free
    finally:
        for p in (hog, child):
            if p is not None:
                p.kill()
                p.wait()


def save_error(name: str, text: str) -> None:
    """The exact error text, for `gputui doctor --explain`."""
    (Path(os.environ.get("OUT", "/tmp")) / name).write_text(text)


def probe_threshold(leave_mib: int, mode: str = "matmul") -> dict:
    result, hog_free = child_then_hog([CHILD_WAIT_THEN, mode], leave_mib)
    result.update(hog_reported_free_mib=hog_free, leave_mib=leave_mib, mode=mode)
    if result.get("ok") is False:
        save_error(f"cublas_error_{mode}_{leave_mib}.txt", result["error"])
    return result


CHILD_SEED = r"""
import json, os, sys, time, torch
root = sys.argv[1]
out = {}
from transformers import Blip2ForConditionalGeneration
blip = Blip2ForConditionalGeneration.from_pretrained(root + "/blip2-opt-2.7b", dtype=torch.float16, device_map="auto")
out["blip2_device_map"] = sorted({str(v) for v in getattr(blip, "hf_device_map", {}).values()})
from gputui.models.chatglm3 import load_chatglm3
glm = load_chatglm3(root + "/chatglm3-6b", device="cuda", dtype=torch.bfloat16)
out["free_after_load_mib"] = torch.cuda.mem_get_info()[0] >> 20
print("loaded", flush=True); sys.stdin.readline()
out["free_at_first_forward_mib"] = torch.cuda.mem_get_info()[0] >> 20
try:
    with torch.no_grad():
        glm(torch.tensor([[1, 2, 3, 4]], device="cuda")).logits.sum().item()
    out["first_forward"] = "ok"
except Exception as e:
    out["first_forward"] = f"{type(e).__name__}: {e}"[:800]
print(json.dumps(out), flush=True)
"""


def seed_repro(root: str, leave_mib: int = 40) -> dict:
    """Both models in one process, placed on GPU 0 as device_map="auto" places them (BLIP2
    through from_pretrained; ChatGLM3 through our loader, its remote code no longer runs),
    then another process takes the GPU down to `leave_mib` free before the first forward."""
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    result, hog_free = child_then_hog([CHILD_SEED, root], leave_mib, env)
    result.update(hog_left_free_mib=hog_free)
    if result.get("first_forward", "ok") != "ok":
        save_error(f"seed_error_{leave_mib}.txt", result["first_forward"])
    return result


def main() -> None:
    what = sys.argv[1]
    if what == "context":
        print(json.dumps(probe_context()))
    elif what == "cublas":
        res = [probe_threshold(m) for m in (200, 100, 66, 40)]
        res.append(probe_threshold(8, "sdpa"))
        print(json.dumps(res))
    elif what == "seed":
        for leave in (int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "40").split(",")):
            print(json.dumps({"leave_mib": leave, **seed_repro(sys.argv[2], leave)}), flush=True)


if __name__ == "__main__":
    main()
