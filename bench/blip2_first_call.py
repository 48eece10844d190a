#!/usr/bin/env python3
"""Why is BLIP2's first answer after Ready slow (11.7 tok/s, then 49)? (device only)

python bench/blip2_first_call.py BLIP2_DIR: each variant in a fresh process: load through the
worker's Blip2Runtime, its warm-up, then three 30-token answers, tok/s of each.
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, sys, time, torch
from PIL import Image
variant = sys.argv[2]
if variant == "no_cudnn_sdpa":
    torch.backends.cuda.enable_cudnn_sdp(False)
from gputui.models.blip2 import Blip2Runtime
dev = torch.device("cuda:0")
rt = Blip2Runtime.load({"path": sys.argv[1]}, [dev], torch.float16)
if variant == "eager_attention":
    rt.model.set_attn_implementation("eager")
t = time.perf_counter(); rt.warm_up(); warm = time.perf_counter() - t
img = Image.new("RGB", (224, 224), (180, 120, 60))
rates = []
for q in ("what is in the picture?", "what colour is it?", "what is in the picture?"):
    s = rt._run(img, q, 30, lambda *a, **k: None, lambda: False, ignore_stop=True)
    rates.append(round(s["tokens_per_s"], 1))
print(json.dumps({"variant": variant, "warm_up_s": round(warm, 2), "tok_s_per_answer": rates}))
"""

for variant in ("default", "no_cudnn_sdpa", "eager_attention"):
    out = subprocess.run([sys.executable, "-c", CHILD, sys.argv[1], variant], capture_output=True, text=True)
    print(out.stdout.strip() or json.dumps({"variant": variant, "error": out.stderr[-1500:]}), flush=True)
