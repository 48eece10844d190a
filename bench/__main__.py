"""python -m bench SUITE... [--root DIR]: run gputui's benchmarks, one JSON line per result.

Suites (GPU ones run on the device machine; see bench/RESULTS.md for the numbers each gave):
  ready      both models, command -> ready, predicted vs measured memory, unload (memory back)
  decode     ChatGLM3 decode tok/s at prompt lengths 16, 1k, 6k; the first load's compile time
  step       where a ChatGLM3 decode step's GPU time goes (GEMVs, the rest) and the token loop's rate
  gemv       the decode GEMVs alone: GB/s of a read, cuBLAS and each Triton tile configuration
  imports    a worker's Python imports: seconds per module set in fresh processes, -X importtime
  blip2      BLIP2 answers: first token, tok/s
  loader     weights from page cache to the GPU, GiB/s
  seed       the seed failure's GPU state (another process leaves too little): refused, never cuBLAS
  faults     fault cases on a real GPU (kill mid-load, OOM, <=40 MiB, device assert, parent death)
  terminal   bytes the dashboard writes to an idle terminal, and its CPU, beside nvitop (--real)
  dashboard  the dashboard's cost: ms per refresh, CPU at 2 and 4 Hz, 8 GPUs (CPU or --real NVML)
  server     the per-user server: start -> both ready, attach -> drawn, gputui chat -> first token, stop
  cluster    a local Ray cluster (CPU, simulated GPUs): up time, snapshot ms at 2/4/6 nodes, actor -> ready
  concurrency  ChatGLM3 with max_batch 32 behind the API: 1-32 streams at once, tok/s, first token; the step's split
  causal     kind causal-lm: Llama-3-8B and Qwen2.5-7B shapes, preflight vs measured, ready, tok/s; three models side by side
  attack     the --demo server's RSS and descriptors under issue 31's attack (dead clients, 30 MiB lines, 4000 chats)
Each line carries the suite, the command, and the machine (GPU, driver, versions) on its first line.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import shlex
import sys
from pathlib import Path

from bench.common import begin, say

SUITES = ("ready", "decode", "step", "gemv", "imports", "blip2", "loader", "seed", "faults", "terminal", "dashboard", "server", "cluster", "attack", "api", "concurrency", "causal")


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("suites", nargs="+", choices=SUITES + ("all-gpu",))
    ap.add_argument("--root", type=Path, default=Path("/tmp/ckpt"), help="real-size checkpoints (made if missing)")
    ap.add_argument("--real", action="store_true", help="dashboard, terminal: read this machine's NVML")
    ap.add_argument("--quick", action="store_true", help="imports: two import times only; blip2: only the graph against generate()")
    args = ap.parse_args()
    suites = [s for s in SUITES if s not in ("dashboard", "terminal", "server", "cluster", "gemv", "imports", "step", "attack", "api")] if args.suites == ["all-gpu"] else args.suites
    failed = 0
    for suite in suites:
        begin(suite, "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
        module = importlib.import_module(f"bench.suites.{suite}")
        try:
            asyncio.run(module.run(args))
        except Exception as e:  # noqa: BLE001 - one suite's failure is a result; the next runs
            failed += 1
            say(step="suite_failed", error=f"{type(e).__name__}: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
