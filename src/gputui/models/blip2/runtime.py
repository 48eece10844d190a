"""BLIP2 inside a worker: transformers' Blip2ForConditionalGeneration and its processor.

Captioning (no question) or question answering ("Question: ... Answer:"), streamed token by
token; fp16/bf16 on a GPU, fp32 on the CPU. Weights go straight to the device (device_map).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import Blip2ForConditionalGeneration, Blip2Processor, StoppingCriteriaList

from gputui.core import env
from gputui.models.blip2.images import open_image
from gputui.models.common.decode_graph import relative_error
from gputui.models.common.hf import CancelCriteria, TextStream
from gputui.models.common.runtime import PromptTooLong


def load_blip2_model(path: Path, device: torch.device, dtype: torch.dtype, fast: bool = True,
                     timings: dict[str, Any] | None = None) -> Any:
    """Blip2ForConditionalGeneration on `device`. Fast: the shards are read by our pinned-ring
    loader (models/common/fast_load.py) and handed to transformers as its state dict, which it adopts
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
    if fast and same_dtype and env.switched_on("GPUTUI_FAST_LOAD"):
        from transformers import Blip2Config, GenerationConfig

        from gputui.models.common import fast_load

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



# Relative L2 error allowed between the graphed step's logits and transformers' forward. fp16
# noise between two orders of the same sums is far below it; a wiring mistake gives order 1.
STEP_TOLERANCE = 0.1


class Blip2Runtime:
    def __init__(self, model: Any, processor: Any, device: torch.device, dtype: torch.dtype,
                 context: int = 512) -> None:
        self.model, self.processor, self.device, self.dtype = model, processor, device, dtype
        self.load_timings: dict[str, Any] = {}
        # OPT's learned positions end here: a longer prompt + answer indexes past its table (an
        # IndexError on the CPU, a device-side assert that poisons the worker on a GPU)
        self.max_positions = int(getattr(model.config.text_config, "max_position_embeddings", 2048))
        # prompt + answer fit the static cache, which the preflight counted at `context` tokens
        self.context = min(self.max_positions, context)
        eos = getattr(model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = model.config.text_config.eos_token_id
        self.eos_ids = [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]
        self.step: Any = None  # our decode step (a CUDA graph on a GPU); None: generate() decodes
        self.decode_kind = "generate"
        self.decode_check: float | None = None
        self.decode_error: str | None = None
        self.last_tokens: list[int] = []  # the last answer's ids (the bench compares them)

    @classmethod
    def load(cls, spec: dict[str, Any], devices: list[torch.device], dtype: torch.dtype) -> Blip2Runtime:
        if spec.get("layer_split"):  # the scheduler refuses this at preflight; a direct caller gets told
            raise ValueError("BLIP2 runs on one GPU; name one GPU")
        device = devices[0]
        path = Path(spec["path"])
        processor = Blip2Processor.from_pretrained(str(path))
        timings: dict[str, float] = {}
        model = load_blip2_model(path, device, dtype, fast=device.type == "cuda", timings=timings)
        from gputui.core.kinds import kind_named

        rt = cls(model, processor, device, dtype, int(spec.get("max_context") or kind_named("blip2").default_context))
        rt.load_timings = timings
        return rt

    def info(self) -> dict[str, Any]:
        return {"load": {k: round(v, 3) if isinstance(v, float) else v for k, v in self.load_timings.items()},
                "decode": self.decode_kind, "decode_check": self.decode_check, "decode_error": self.decode_error,
                "max_context": self.context}

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def warm_up(self) -> None:
        from PIL import Image

        size = self.processor.image_processor.size
        img = Image.new("RGB", (size.get("width", 224), size.get("height", 224)), (120, 90, 60))
        self._prepare_step(img)
        self._run(img, "", 2, lambda *_a, **_k: None, lambda: False)

    def _prepare_step(self, img: Any) -> None:
        """Our decode step, if it runs here and agrees with transformers' forward on the second
        token of a caption; generate() decodes otherwise, and info() says why."""
        if not env.switched_on("GPUTUI_FUSED_DECODE"):
            self.decode_error = "off (GPUTUI_FUSED_DECODE=0)"
            return
        from gputui.models.blip2.opt_decode import OptDecodeStep
        from gputui.models.common.decode_graph import GraphDecodeStep

        try:
            step = OptDecodeStep(self.model.language_model, self.context, self.device)
            inputs = self._inputs(img, "")
            with torch.inference_mode():
                stock = self.model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False,
                                            eos_token_id=self.eos_ids, return_dict_in_generate=True, output_logits=True)
            want = stock.logits[1][0].float()
            first, n = self._prefill(inputs, step, ignore_stop=True)
            got = step(torch.tensor([first], device=self.device), torch.tensor([n], device=self.device)).float()
            err = relative_error(got, want)
            self.decode_check = round(err, 5)
            if not err <= STEP_TOLERANCE:
                self.decode_error = f"disagrees with transformers' forward (relative error {err:.3g})"
                return
            lm = self.model.language_model
            self.step = (GraphDecodeStep(lm, None, self.device, step) if self.device.type == "cuda"
                         else _EagerStep(step, self.device))
            self.decode_kind = "graph" if self.device.type == "cuda" else "step"
        except Exception as e:  # noqa: BLE001 - generate() still decodes
            self.decode_error = f"{type(e).__name__}: {e}"[:300]

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
        """The answer's length, capped so prompt + answer stay inside the context (at most the
        position table)."""
        if prompt_tokens >= self.context:
            raise PromptTooLong(
                f"prompt is {prompt_tokens} tokens; BLIP2's language model reads at most {self.context}",
                f"the question is too long: {prompt_tokens} tokens with the image, and this BLIP2 reads at most "
                f"{self.context - 1} before its answer; shorten it")
        room = self.context - prompt_tokens
        if max_new > room:
            emit("", notice=f"answer capped at {room} tokens: this BLIP2 reads {self.context} tokens "
                            f"in all, and the image and question take {prompt_tokens}")
            return room
        return max(1, max_new)

    def _inputs(self, img: Any, question: str) -> Any:
        prompt = f"Question: {question} Answer:" if question else ""
        inputs = self.processor(images=img, text=prompt, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def _prefill(self, inputs: Any, step: Any, ignore_stop: bool) -> tuple[int, int]:
        """transformers' generate() for the first token (image, queries and question through
        the model's own code), its cache copied into the step's. Returns (token, prompt length)."""
        from gputui.models.common.hf import generated_cache

        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=1, min_new_tokens=1 if ignore_stop else 0,
                                      do_sample=False, eos_token_id=self.eos_ids, return_dict_in_generate=True)
        n = int(inputs["input_ids"].shape[1])
        step.load_prefix(generated_cache(out), n)
        return int(out.sequences[0, -1]), n

    @torch.inference_mode()
    def _run(self, img: Any, question: str, max_new: int, emit: Callable[..., None],
             cancelled: Callable[[], bool], ignore_stop: bool = False) -> dict[str, Any]:
        t0 = time.monotonic()
        inputs = self._inputs(img, question)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        max_new = self._fit(prompt_tokens, max_new, emit)
        if self.step is None:
            stream = TextStream(self.processor.tokenizer, emit, skip=1)
            # ignore_stop: exactly max_new tokens (benchmarks with random weights)
            self.model.generate(**inputs, max_new_tokens=max_new, min_new_tokens=max_new if ignore_stop else 0,
                                do_sample=False, streamer=stream, eos_token_id=self.eos_ids,
                                stopping_criteria=StoppingCriteriaList([CancelCriteria(cancelled)]))
        else:
            stream = TextStream(self.processor.tokenizer, emit, skip=0)
            self._decode(inputs, max_new, stream, cancelled, ignore_stop)
        end = time.monotonic()
        self.last_tokens = list(stream.ids)
        first = stream.first_at or end
        n = stream.count
        return {"prompt_tokens": prompt_tokens, "new_tokens": n, "ttft_s": first - t0,
                "tokens_per_s": (n - 1) / (end - first) if n > 1 and end > first else None,
                "finish": "cancelled" if cancelled() else "stop", "text": stream.sent, "decode_path": self.decode_kind}

    def _decode(self, inputs: Any, max_new: int, stream: TextStream, cancelled: Callable[[], bool],
                ignore_stop: bool) -> None:
        """Greedy, as generate(do_sample=False) decodes: the first token from the prefill, then
        one step per token; with ignore_stop the end-of-text ids are never chosen (generate's
        min_new_tokens does the same)."""
        tid, pos = self._prefill(inputs, self.step.step_fn, ignore_stop)
        n = 1
        stop_ids = set(self.eos_ids)
        while True:
            done = n >= max_new or (not ignore_stop and tid in stop_ids) or cancelled()
            if not done:  # queued first: the GPU computes while this token is sent
                logits = self.step(tid, pos)
                pos += 1
            stream.put(torch.tensor([tid]))
            if done:
                break
            if ignore_stop:
                logits[self.eos_ids] = float("-inf")
            tid = int(torch.argmax(logits))
            n += 1
        stream.end()


class _EagerStep:
    """The step without a graph (the CPU: tests), called as the graphed one is."""

    def __init__(self, step_fn: Any, device: torch.device) -> None:
        self.step_fn, self.device = step_fn, device

    def __call__(self, token_id: int, position: int) -> torch.Tensor:
        return self.step_fn(torch.tensor([token_id], device=self.device), torch.tensor([position], device=self.device))
