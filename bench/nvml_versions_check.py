"""On a real driver: which version of each versioned NVML call answers, and does gputui's
reader find a CUDA process through it. Run on the device machine:

    python3 bench/nvml_versions_check.py     (prints JSON lines; bench/device.sh sets the path)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HOLD = ("import torch, time, sys; x = torch.empty(1 << 30, dtype=torch.uint8, device='cuda'); "
        "print('held', flush=True); time.sleep(60)")


def main() -> None:
    import pynvml  # noqa: TID251 - a measurement of the binding itself

    from gputui.hardware.nvml import NvmlTelemetry

    holder = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        direct = {}
        for name in ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2",
                     "nvmlDeviceGetComputeRunningProcesses"):
            try:
                procs = getattr(pynvml, name)(handle)
                direct[name] = sorted(p.pid for p in procs)
            except Exception as e:  # noqa: BLE001 - we report what each entry point does
                direct[name] = f"{type(e).__name__}: {e}"
        t = NvmlTelemetry()
        t0 = time.perf_counter()
        snap = t.snapshot()
        snapshot_ms = (time.perf_counter() - t0) * 1000
        g = snap.gpus[0]
        print(json.dumps({
            "driver": snap.driver_version, "nvidia_ml_py": getattr(pynvml, "__version__", "?"),
            "holder_pid": holder.pid, "direct": direct,
            "chosen": {k: c.chosen for k, c in t._process_calls.items()},
            "gputui_processes": [(p.pid, p.used_bytes >> 20 if p.used_bytes else None, p.kind) for p in g.processes],
            "unavailable": list(g.unavailable), "error": g.error, "snapshot_ms": round(snapshot_ms, 2),
            "holder_found": any(p.pid == holder.pid for p in g.processes),
        }))
        st = subprocess.run([sys.executable, "-m", "gputui", "status", "--json"], capture_output=True, text=True,
                            env=os.environ.copy())
        doc = json.loads(st.stdout)
        print(json.dumps({"status_rc": st.returncode, "status_stderr": st.stderr[-300:],
                          "status_gpus": len(doc["gpus"]), "status_pids": [p["pid"] for p in doc["gpus"][0]["processes"]]}))
    finally:
        holder.kill()


if __name__ == "__main__":
    main()
