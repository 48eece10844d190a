#!/usr/bin/env python3
"""Why is BLIP2 decode slow in the worker? Time 30 tokens several ways (device only)."""

from __future__ import annotations

import json
import sys
import time

import torch
from PIL import Image
from transformers import Blip2ForConditionalGeneration, Blip2Processor

path = sys.argv[1]
proc = Blip2Processor.from_pretrained(path)
model = Blip2ForConditionalGeneration.from_pretrained(path, dtype=torch.float16, device_map={"": "cuda:0"}).eval()
img = Image.new("RGB", (224, 224), (180, 120, 60))
inputs = proc(images=img, text="Question: what is it? Answer:", return_tensors="pt").to("cuda")
inputs["pixel_values"] = inputs["pixel_values"].half()


def timed(label: str, **kw: object) -> None:
    for _ in range(2):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = model.generate(**inputs, max_new_tokens=30, min_new_tokens=30, do_sample=False, **kw)
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    n = out.shape[1] - inputs["input_ids"].shape[1] if out.shape[1] > inputs["input_ids"].shape[1] else out.shape[1]
    print(json.dumps({"variant": label, "seconds": round(dt, 3), "tokens": int(n), "tok_s": round(n / dt, 1)}), flush=True)


timed("plain generate, device_map")
from transformers import StoppingCriteriaList  # noqa: E402

from gputui.models.blip2 import _Cancel, _Stream  # noqa: E402

timed("with streamer", streamer=_Stream(proc.tokenizer, lambda *_: None, skip=1))
timed("with cancel criterion", stopping_criteria=StoppingCriteriaList([_Cancel(lambda: False)]))
