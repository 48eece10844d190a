"""ChatGLM3 inside a worker, on gputui's own model: load, warm up, and serve many replies at once.

The worker imports torch, Triton and this, never transformers (a cold launch paid 10.9 s for
`from transformers import GlmForCausalLM`). Replies share the GPU through the continuous batch
(glm_engine) in up to `max_batch` cache slots. On a GPU the decode step is a CUDA graph: with one
stream, the fused step (Triton GEMVs at the read roofline, checked against the plain step at
warm-up); with more, one graph per batch size (2, 4, 8, ... max_batch) over the plain step, whose
matmuls read each weight once for all rows.

A model split over GPUs, or GPUTUI_GLM_RUNTIME=transformers, runs on transformers'
GlmForCausalLM instead (chatglm3_runtime: one reply at a time).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gputui.core import env
from gputui.core.kinds import PREFILL_CHUNK
from gputui.models.common.decode_graph import relative_error
from gputui.models.glm.chatglm3_tokenizer import ChatGLM3Tokenizer
from gputui.models.glm.glm_checks import (
    FUSED_TOLERANCE,
    REPLAY_TOLERANCE,
    fused_step_unavailable,
    start_kernel_precompile,
)
from gputui.models.glm.glm_engine import BatchEngine, Stream
from gputui.models.glm.glm_model import GlmModel, GlmWeights, KVCache, load_glm
from gputui.models.glm.glm_prompt import dropped_notice, fit_conversation, reply_budget
from gputui.models.glm.glm_steps import EagerSteps, GraphSteps, triton_parts

try:  # imported up front, so a spare worker pays for Triton's import while it waits
    from gputui.models.glm import glm_triton  # noqa: F401
except ImportError:  # no Triton: the plain step serves
    pass



def batch_sizes(max_batch: int) -> list[int]:
    """The batch sizes that get a CUDA graph: powers of two up to max_batch, and max_batch."""
    sizes = [b for b in (2, 4, 8, 16, 32, 64, 128, 256) if b < max_batch]
    return sizes + [max_batch] if max_batch > 1 else []


class GlmRuntime:
    """The Runtime of kind chatglm3 (models/common/runtime.py)."""

    def __init__(self, weights: GlmWeights, tok: ChatGLM3Tokenizer, device: torch.device, max_context: int,
                 max_batch: int) -> None:
        self.weights, self.tok, self.device = weights, tok, device
        self.max_context, self.max_batch = max_context, max_batch
        self.concurrent = max_batch > 1  # the worker answers requests on threads of their own
        self.use_graph = True
        self.steps: EagerSteps | None = None
        self.engine: BatchEngine | None = None
        self.graph_error: str | None = None
        self.fused_check: float | None = None
        self.fused_error: str | None = None
        self.load_timings: dict[str, float] = {}
        self._precompile: threading.Thread | None = None

    @classmethod
    def load(cls, spec: dict[str, Any], devices: list[torch.device], dtype: torch.dtype) -> Any:
        if spec.get("layer_split") or env.get("GPUTUI_GLM_RUNTIME") == "transformers":
            from gputui.models.glm.chatglm3_runtime import ChatGLM3Runtime

            return ChatGLM3Runtime.load(spec, devices, dtype)
        path = Path(spec["path"])
        tok = ChatGLM3Tokenizer(path)
        timings: dict[str, float] = {}
        device = devices[0]
        precompile = start_kernel_precompile(path, device, dtype, timings, slotted=True)
        weights = load_glm(path, device, dtype, timings)
        ctx = min(int(spec.get("max_context") or weights.shape.max_positions), weights.shape.max_positions)
        rt = cls(weights, tok, device, ctx, max(1, int(spec.get("max_batch") or 1)))
        rt._precompile, rt.load_timings = precompile, timings
        return rt

    def weight_bytes(self) -> int:
        return self.weights.nbytes()

    def info(self) -> dict[str, Any]:
        graphs = isinstance(self.steps, GraphSteps)
        return {"max_context": self.max_context, "max_batch": self.max_batch, "runtime": "gputui",
                "cuda_graph": graphs, "cuda_graph_error": self.graph_error, "decode": self.decode_kind(),
                "fused_check": self.fused_check, "fused_error": self.fused_error,
                "batch_graphs": self.steps.sizes if isinstance(self.steps, GraphSteps) else [],
                "graph_for_rows": self.steps.use if isinstance(self.steps, GraphSteps) else {},
                "layer_split": None, "decode_note": None,
                "load": {k: round(v, 3) for k, v in self.load_timings.items()}}

    def decode_kind(self) -> str:
        if isinstance(self.steps, GraphSteps):
            return "fused" if self.steps.fused else "stock"
        return "eager"

    # -- warm-up ---------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Take the memory every slot at full context needs now (the KV cache, one full prefill
        chunk of activations), build the decode steps, and answer a short reply."""
        cache = KVCache(self.weights.shape, self.max_batch, self.max_context, self.device, self.weights.dtype)
        s = self.weights.shape
        attend, ops = triton_parts(s, s.inv_freq().to(self.device), self.device, rows=self.max_batch)
        model = GlmModel(self.weights, cache, attend, ops)
        n = min(PREFILL_CHUNK, self.max_context - 4)
        # the full chunk first (its activations are the most a prefill takes), then a few smaller
        # sizes: cuBLAS loads the kernels of each new shape on first use (the first 8 and 32 short
        # prompts arriving together waited ~1.1 s for that on the H200)
        for size in (n, 8, 32, 128, 512):
            model.prefill(0, torch.full((min(size, n),), self.tok.bos_id, device=self.device), 0, logits=True)
        self.steps = self._steps(model)
        self.engine = BatchEngine(self.steps, self.max_batch, self.device)
        self._quiet_reply(3)
        self.engine.start()

    def _steps(self, model: GlmModel) -> EagerSteps:
        if self.device.type != "cuda" or not self.use_graph:
            return EagerSteps(model)
        fused = self._fused_step(model)
        try:
            steps = GraphSteps(model, batch_sizes(self.max_batch), fused)
        except Exception as e:  # noqa: BLE001 - eager decoding still works
            self.graph_error = f"{type(e).__name__}: {e}"[:300]
            return EagerSteps(model)
        if steps.fused and not self._replay_agrees(steps, model):
            steps = GraphSteps(model, batch_sizes(self.max_batch), None)
        return steps

    def _check_case(self, model: GlmModel) -> tuple[list[int], int]:
        prompt = self.tok.chat_ids([{"role": "user", "content": "hello"}])
        model.prefill(0, torch.tensor(prompt, device=self.device), 0)
        return prompt, len(prompt)

    def _fused_step(self, model: GlmModel) -> Any:
        """The fused one-stream step, if it runs here and its logits match the plain step's on one
        real step after a short prompt; None (and why, in info) otherwise."""
        from gputui.models.glm.glm_decode import GlmDecodeStep

        self.fused_error = fused_step_unavailable(self._precompile)
        if self.fused_error is not None:
            return None
        try:
            slot = torch.zeros(1, dtype=torch.long, device=self.device)
            step = GlmDecodeStep(self.weights, model.cache.k, model.cache.v, self.device, slot=slot)
            _, pos = self._check_case(model)
            one = torch.tensor([self.tok.bos_id], device=self.device)
            at = torch.tensor([pos], device=self.device)
            want = model.decode(one, slot, at)[0].float()
            got = step(one.view(1, 1), at).float()
            err = relative_error(got, want)
            self.fused_check = round(err, 5)
            self._want = got
            if not err <= FUSED_TOLERANCE:
                self.fused_error = f"disagrees with the plain step (relative error {err:.3g})"
                return None
            return step
        except Exception as e:  # noqa: BLE001 - the plain step serves instead
            self.fused_error = f"{type(e).__name__}: {e}"[:300]
            return None

    def _replay_agrees(self, steps: GraphSteps, model: GlmModel) -> bool:
        """The captured fused step gives what it gave when run directly at the check."""
        _, pos = self._check_case(model)
        got = steps.decode([self.tok.bos_id], [0], [pos]).logits[0].float()
        want = self._want
        err = relative_error(got, want)
        if err <= REPLAY_TOLERANCE:
            return True
        self.fused_error = f"its CUDA graph disagrees with the step run directly (relative error {err:.3g})"
        return False

    def _quiet_reply(self, n: int) -> None:
        """A short reply through the engine, run here; two at once where the batch allows, so
        the first requests that arrive together pay for no first use (prompts prefilled in one
        forward, a batch graph)."""
        assert self.engine is not None
        ids = self.tok.chat_ids([{"role": "user", "content": "hi"}])
        streams = [self._stream(ids[: len(ids) - k], n, 0.0, 1.0, None, lambda *_a, **_k: None, lambda: False,
                                ignore_stop=True) for k in range(min(2, self.max_batch))]
        for st in streams:
            self.engine.submit(st)
        self.engine.run_until_idle()
        for st in streams:
            if st.error is not None:
                raise st.error

    # -- chat ------------------------------------------------------------------------------

    def _stream(self, ids: list[int], max_new: int, temperature: float, top_p: float, seed: Any,
                emit: Callable[..., None], cancelled: Callable[[], bool], ignore_stop: bool) -> Stream:
        gen = torch.Generator(device="cpu").manual_seed(int(seed)) if seed is not None else None
        return Stream(prompt=ids, max_new=min(max_new, self.max_context - len(ids)), temperature=temperature,
                      top_p=top_p, emit=emit, cancelled=cancelled, decoder=self.tok.stream_decoder(),
                      stop=frozenset() if ignore_stop else frozenset(self.tok.stop_ids), generator=gen)

    def generate(self, req: dict[str, Any], emit: Callable[..., None], cancelled: Callable[[], bool]) -> dict[str, Any]:
        assert self.engine is not None, "warm_up first"
        params = req.get("params") or {}
        max_new = reply_budget(params, self.max_context)
        ids, dropped = fit_conversation(self.tok, self.max_context, list(req.get("messages") or []), max_new)
        if dropped:
            emit("", notice=dropped_notice(self.max_context, dropped))
        st = self._stream(ids, max_new, float(params.get("temperature", 0.8)), float(params.get("top_p", 0.8)),
                          params.get("seed"), emit, cancelled, bool(params.get("ignore_stop", False)))
        stats = self.engine.answer(st)
        graphs = isinstance(self.steps, GraphSteps)
        stats.update(dropped_messages=dropped, cuda_graph=graphs, cuda_graph_error=self.graph_error,
                     decode_path=f"graph ({self.decode_kind()}, batch of up to {self.max_batch})" if graphs
                     else "eager")
        return stats
