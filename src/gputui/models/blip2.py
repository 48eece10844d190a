"""BLIP2 inside a worker: transformers' Blip2ForConditionalGeneration and its processor.

Captioning (no question) or question answering ("Question: ... Answer:"), streamed token by
token; fp16/bf16 on a GPU, fp32 on the CPU. Weights go straight to the device (device_map).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import Blip2ForConditionalGeneration, Blip2Processor, StoppingCriteriaList

from gputui.models.hf import CancelCriteria, TextStream
from gputui.models.images import open_image


def load_blip2_model(path: Path, device: torch.device, dtype: torch.dtype, fast: bool = True,
                     timings: dict[str, Any] | None = None) -> Any:
    """Blip2ForConditionalGeneration on `device`. Fast: the shards are read by our pinned-ring
    loader (models/fast_load.py) and handed to transformers as its state dict, which it adopts
    without copying (measured: every parameter shares the loader's buffers); its own loader
    copies tensor by tensor from the memory map (7.1 GB took 2.2 s on the H100). Only when the
    file's dtype is the one asked for: a cast would hold the read buffers and the cast copies
    at once, more than the preflight counted. Otherwise transformers loads (safetensors only)."""
    from gputui.core.checkpoint_info import tensor_infos, weight_files

    timings = timings if timings is not None else {}
    fmt, files = weight_files(path)
    target = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}.get(dtype)
    same_dtype = fmt == "safetensors" and all(
        t.dtype == target for t in tensor_infos(path) if t.dtype in ("F16", "BF16", "F32", "F64"))
    if fast and same_dtype and os.environ.get("GPUTUI_FAST_LOAD", "1") != "0":
        from transformers import Blip2Config, GenerationConfig

        from gputui.models import fast_load

        # Modules transformers keeps in float32 (the Q-Former) are cast, i.e. copied: read them
        # to host memory, so their float16 bytes do not stay behind in a GPU buffer (measured:
        # +276 MiB when they were read to the GPU too).
        keep = set(getattr(Blip2ForConditionalGeneration, "_keep_in_fp32_modules", None) or ())
        host = torch.device("cpu")

        def device_of(name: str) -> torch.device:
            return host if keep.intersection(name.split(".")) else device

        state = dict(fast_load.read_tensors(files, device_of, timings))
        # device_map keeps the tensors where they are (without one, transformers made CPU
        # parameters and copied all 1247: 8.9 s); its allocator warm-up is off, as it would
        # reserve the model's size a second time (measured: 15090 MiB held for a 7.1 GB model).
        with _no_allocator_warmup():
            model = Blip2ForConditionalGeneration.from_pretrained(
                None, config=Blip2Config.from_pretrained(str(path)), state_dict=state, dtype=dtype,
                device_map={"": str(device)})
        if (path / "generation_config.json").is_file():
            model.generation_config = GenerationConfig.from_pretrained(str(path))
        ours = {t.untyped_storage().data_ptr() for t in state.values()}
        timings["copied_params"] = sum(p.untyped_storage().data_ptr() not in ours for p in model.parameters())
        del state
        if timings["copied_params"] and device.type == "cuda":  # hand back what the copies freed
            torch.cuda.empty_cache()
        timings["loader"] = "gputui"
    else:
        model = Blip2ForConditionalGeneration.from_pretrained(
            str(path), dtype=dtype, device_map={"": str(device)}, use_safetensors=True)
        timings["loader"] = "transformers"
    return model.eval()


@contextlib.contextmanager
def _no_allocator_warmup() -> Iterator[None]:
    """transformers reserves a model's whole size on the GPU before loading into it, to save
    cudaMalloc calls; our weights are on the GPU already, so that would only double the memory
    at load. (A transformers without the function: nothing to turn off.)"""
    import transformers.modeling_utils as mu

    original = getattr(mu, "caching_allocator_warmup", None)
    if original is None:
        yield
        return
    mu.caching_allocator_warmup = lambda *_a, **_k: None
    try:
        yield
    finally:
        mu.caching_allocator_warmup = original


class ImageRequired(ValueError):
    @property
    def user_message(self) -> str:
        return str(self)


class PromptTooLong(ValueError):
    def __init__(self, n: int, limit: int) -> None:
        super().__init__(f"prompt is {n} tokens; BLIP2's language model reads at most {limit}")
        self.user_message = (f"the question is too long: {n} tokens with the image, and this BLIP2 reads at most "
                             f"{limit - 1} before its answer; shorten it")


class Blip2Runtime:
    def __init__(self, model: Any, processor: Any, device: torch.device, dtype: torch.dtype) -> None:
        self.model, self.processor, self.device, self.dtype = model, processor, device, dtype
        self.load_timings: dict[str, Any] = {}
        # OPT's learned positions end here: a longer prompt + answer indexes past its table (an
        # IndexError on the CPU, a device-side assert that poisons the worker on a GPU)
        self.max_positions = int(getattr(model.config.text_config, "max_position_embeddings", 2048))

    @classmethod
    def load(cls, spec: dict[str, Any], devices: list[torch.device], dtype: torch.dtype) -> Blip2Runtime:
        if spec.get("layer_split"):  # the scheduler refuses this at preflight; a direct caller gets told
            raise ValueError("BLIP2 runs on one GPU; name one GPU")
        device = devices[0]
        path = Path(spec["path"])
        processor = Blip2Processor.from_pretrained(str(path))
        timings: dict[str, float] = {}
        model = load_blip2_model(path, device, dtype, fast=device.type == "cuda", timings=timings)
        rt = cls(model, processor, device, dtype)
        rt.load_timings = timings
        return rt

    def info(self) -> dict[str, Any]:
        return {"load": {k: round(v, 3) if isinstance(v, float) else v for k, v in self.load_timings.items()}}

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def warm_up(self) -> None:
        from PIL import Image

        size = self.processor.image_processor.size
        img = Image.new("RGB", (size.get("width", 224), size.get("height", 224)), (120, 90, 60))
        self._run(img, "", 2, lambda *_a, **_k: None, lambda: False)

    def generate(self, req: dict[str, Any], emit: Callable[..., None], cancelled: Callable[[], bool]) -> dict[str, Any]:
        image_path = req.get("image")
        if not image_path:
            raise ImageRequired("BLIP2 needs an image: /image PATH [question]")
        img = open_image(image_path)
        question = str(req.get("question") or "").strip()
        params = req.get("params") or {}
        return self._run(img, question, int(params.get("max_new_tokens", 40)), emit, cancelled,
                         ignore_stop=bool(params.get("ignore_stop", False)))

    def _fit(self, prompt_tokens: int, max_new: int, emit: Callable[..., None]) -> int:
        """The answer's length, capped so prompt + answer stay inside the position table."""
        if prompt_tokens >= self.max_positions:
            raise PromptTooLong(prompt_tokens, self.max_positions)
        room = self.max_positions - prompt_tokens
        if max_new > room:
            emit("", notice=f"answer capped at {room} tokens: this BLIP2 reads {self.max_positions} tokens "
                            f"in all, and the image and question take {prompt_tokens}")
            return room
        return max(1, max_new)

    @torch.inference_mode()
    def _run(self, img: Any, question: str, max_new: int, emit: Callable[..., None],
             cancelled: Callable[[], bool], ignore_stop: bool = False) -> dict[str, Any]:
        t0 = time.monotonic()
        prompt = f"Question: {question} Answer:" if question else ""
        inputs = self.processor(images=img, text=prompt, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        max_new = self._fit(int(inputs["input_ids"].shape[1]), max_new, emit)
        stream = TextStream(self.processor.tokenizer, emit, skip=1)
        # ignore_stop: exactly max_new tokens (benchmarks with random weights)
        self.model.generate(**inputs, max_new_tokens=max_new, min_new_tokens=max_new if ignore_stop else 0,
                            do_sample=False, streamer=stream,
                            stopping_criteria=StoppingCriteriaList([CancelCriteria(cancelled)]))
        end = time.monotonic()
        first = stream.first_at or end
        n = stream.count
        return {"prompt_tokens": int(inputs["input_ids"].shape[1]), "new_tokens": n, "ttft_s": first - t0,
                "tokens_per_s": (n - 1) / (end - first) if n > 1 and end > first else None,
                "finish": "cancelled" if cancelled() else "stop", "text": stream.sent}
