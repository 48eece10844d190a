#!/usr/bin/env python3
"""Where a ChatGLM3-6B decode step spends GPU time (device only): kernel table of 10 eager steps."""

from __future__ import annotations

import sys

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import StaticCache

from gputui.models.chatglm3 import load_chatglm3
from gputui.models.gqa_attention import use_gqa_attention

model = load_chatglm3(sys.argv[1], device="cuda", dtype=torch.bfloat16)
use_gqa_attention(model)
ctx = int(sys.argv[2]) if len(sys.argv) > 2 else 8192
cache = StaticCache(config=model.config, max_cache_len=ctx)
with torch.inference_mode():
    model(input_ids=torch.randint(100, 60000, (1, 1024), device="cuda"), past_key_values=cache,
          cache_position=torch.arange(1024, device="cuda"), use_cache=True, logits_to_keep=1)

    def step(i: int) -> None:
        model(input_ids=torch.tensor([[5]], device="cuda"), past_key_values=cache,
              cache_position=torch.tensor([1024 + i], device="cuda"), use_cache=True)

    for i in range(3):
        step(i)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(10):
            step(3 + i)
        torch.cuda.synchronize()
print(f"max_cache_len {ctx}")
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))
