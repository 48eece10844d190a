"""What a worker's Python imports cost, in fresh processes (each set twice: the first may read
from a cold page cache), side by side (several workers at once), and where the time goes
(`python -X importtime`, the modules with the most cumulative time)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import say
from gputui.core.kinds import KINDS

# as the worker imports: the packages it hides first (worker/main.py), then its kind's runtime
HIDE = "import sys; from gputui.worker.main import UNUSED_PACKAGES; [sys.modules.setdefault(p, None) for p in UNUSED_PACKAGES]; "
SETS = {
    "torch": "import torch",
    "transformers": "import transformers",
    "glm_class": "from transformers import GlmForCausalLM",
    **{f"worker_{name}": f"{HIDE}import {kind.runtime.partition(':')[0]}" for name, kind in KINDS.items()},
    "worker_chatglm3_without_hiding": f"import {KINDS['chatglm3'].runtime.partition(':')[0]}",
}


def timed(code: str, n: int = 1) -> float:
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    for p in procs:
        p.wait()
    return time.monotonic() - t0


def top_imports(code: str, count: int = 25) -> list[tuple[str, float]]:
    """The modules with the most cumulative import time (seconds), outermost first on ties."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            rows.append((parts[2].strip(), int(parts[1]) / 1e6))
        except ValueError:
            continue
    return sorted(rows, key=lambda r: -r[1])[:count]


async def run(args: argparse.Namespace) -> None:
    if args.quick:  # what hiding the unused packages saves a ChatGLM3 worker, once each
        for name in ("worker_chatglm3", "worker_chatglm3_without_hiding"):
            say(step="import", set=name, seconds=round(timed(SETS[name]), 2))
        return
    for name, code in SETS.items():
        say(step="import", set=name, first_s=round(timed(code), 2), second_s=round(timed(code), 2))
    for n in (2, 4):
        code = SETS["worker_chatglm3"]
        say(step="side_by_side", set="worker_chatglm3", processes=n, seconds=round(timed(code, n), 2))
    for name in ("worker_chatglm3", "worker_blip2"):  # where the time goes
        say(step="importtime", set=name, top=[(m, round(s, 3)) for m, s in top_imports(SETS[name])])
