"""ChatGLM3 inside a worker: load, warm up, and stream replies token by token.

The decode loop is our own rather than `generate()`: it checks for a cancel between every two
tokens (stop within one token), streams through the incremental decoder, prefills in bounded
chunks (so activation memory matches the preflight estimate), and cuts a conversation that
is longer than the context from its oldest turns, saying so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gputui.core.kinds import PREFILL_CHUNK
from gputui.models.common.decode_graph import relative_error
from gputui.models.common.hf import prefill_static, step_static
from gputui.models.common.sampling import next_token
from gputui.models.glm.chatglm3 import ChatGLM3Tokenizer, load_chatglm3
from gputui.models.glm.glm_checks import (
    FUSED_TOLERANCE,
    REPLAY_TOLERANCE,
    fused_step_unavailable,
    start_kernel_precompile,
)
from gputui.models.glm.glm_prompt import dropped_notice, fit_conversation, reply_budget

try:  # imported up front, so a spare worker pays for Triton's import while it waits
    from gputui.models.glm import glm_triton  # noqa: F401
except ImportError:  # no Triton: the decode graph runs the model's own forward
    pass



class ChatGLM3Runtime:
    def __init__(self, model: Any, tok: ChatGLM3Tokenizer, device: torch.device, max_context: int) -> None:
        self.model = model
        self.tok = tok
        self.device = device
        self.max_context = max_context
        self.cache: Any = None
        self.graph_step: Any = None
        self.graph_error: str | None = None
        self.use_graph = True
        self.decode_kind = "eager"
        self._precompile: threading.Thread | None = None
        self.load_timings: dict[str, float] = {}
        self.fused_check: float | None = None
        self.fused_error: str | None = None
        self._check_case: tuple[list[int], int, torch.Tensor] = ([], 0, torch.zeros(0))  # set by the check
        self.run_ahead: Any = None  # decode_graph.GreedyRunAhead: greedy replies, GPU a step ahead
        self.run_ahead_error: str | None = None
        self.last_tokens: list[int] = []
        self.layer_split: list[list[int]] | None = None  # [start, stop) per device, when split

    @classmethod
    def load(cls, spec: dict[str, Any], devices: list[torch.device], dtype: torch.dtype) -> ChatGLM3Runtime:
        """`devices`: one, or one per range of spec["layer_split"] (a model split over GPUs)."""
        path = Path(spec["path"])
        tok = ChatGLM3Tokenizer(path)
        load_timings: dict[str, float] = {}
        split = spec.get("layer_split")
        per_layer = None
        if split:
            from gputui.models.common.layer_split import layer_devices

            # the ranges' end is the layer count; load_chatglm3 checks it against the config
            per_layer = layer_devices(split, devices, split[-1][1])
        device = devices[0]
        precompile = start_kernel_precompile(path, device, dtype, load_timings, slotted=False)
        model = load_chatglm3(path, device=device, dtype=dtype, timings=load_timings, layer_devices=per_layer)
        from gputui.models.common.gqa_attention import use_gqa_attention

        use_gqa_attention(model)
        ctx = int(spec.get("max_context") or model.config.max_position_embeddings)
        rt = cls(model, tok, device, min(ctx, model.config.max_position_embeddings))
        rt._precompile = precompile
        rt.load_timings = load_timings
        rt.layer_split = [list(r) for r in split] if split else None
        return rt

    def info(self) -> dict[str, Any]:
        return {"max_context": self.max_context, "cuda_graph": self.graph_step is not None,
                "cuda_graph_error": self.graph_error, "decode": self.decode_kind,
                "fused_check": self.fused_check, "fused_error": self.fused_error,
                "run_ahead": self.run_ahead is not None, "run_ahead_error": self.run_ahead_error,
                "layer_split": self.layer_split, "decode_note": self.decode_note(),
                "load": {k: round(v, 3) for k, v in self.load_timings.items()}}

    def decode_note(self) -> str | None:
        """For a split model, the line the dashboard shows under the models table: where its
        layers are and how it decodes. (A one-GPU model's slower path is said by the dashboard
        from fused_error.)"""
        if not self.layer_split:
            return None
        ranges = " | ".join(f"{a}-{b - 1}" for a, b in self.layer_split)
        where = f"split over {len(self.layer_split)} GPUs (layers {ranges})"
        if self.graph_step is not None:
            return f"{where}: one CUDA graph per GPU"
        why = self.fused_error or self.graph_error or "no CUDA graph on this device"
        return f"{where}; decodes eagerly ({why})"

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def warm_up(self) -> None:
        """Take the memory a full-context chat needs now (static KV cache, one full prefill
        chunk of activations), capture the decode graph, and run a short reply."""
        self._ensure_cache()
        n = min(PREFILL_CHUNK, self.max_context - 4)
        self._prefill([self.tok.bos_id] * n)
        self._capture()
        self._set_up_run_ahead()
        ids = self.tok.chat_ids([{"role": "user", "content": "hi"}])
        self._decode(ids, max_new_tokens=3, temperature=0.0, top_p=1.0, emit=lambda _t: None,
                     cancelled=lambda: False, ignore_stop=True)

    # -- chat -----------------------------------------------------------------------------

    def fit_conversation(self, messages: list[dict[str, Any]], max_new: int) -> tuple[list[int], int]:
        return fit_conversation(self.tok, self.max_context, messages, max_new)

    def generate(self, req: dict[str, Any], emit: Callable[..., None], cancelled: Callable[[], bool]) -> dict[str, Any]:
        params = req.get("params") or {}
        max_new = reply_budget(params, self.max_context)
        ids, dropped = self.fit_conversation(list(req.get("messages") or []), max_new)
        if dropped:
            emit("", notice=dropped_notice(self.max_context, dropped))
        stats = self._decode(ids, max_new, float(params.get("temperature", 0.8)),
                             float(params.get("top_p", 0.8)), emit, cancelled, seed=params.get("seed"),
                             ignore_stop=bool(params.get("ignore_stop", False)))
        stats["dropped_messages"] = dropped
        return stats

    def _ensure_cache(self) -> Any:
        """One static KV cache for the whole context, made once: memory is taken at warm-up
        (what the preflight counted) and a GPU filled by others later cannot starve a chat."""
        if self.cache is None:
            from transformers import StaticCache

            self.cache = StaticCache(config=self.model.config, max_cache_len=self.max_context)
        return self.cache

    def _prefill(self, ids: list[int]) -> torch.Tensor:
        return prefill_static(self.model, self._ensure_cache(), ids, self.device, PREFILL_CHUNK)

    def _step(self, token_id: int, position: int) -> torch.Tensor:
        if self.graph_step is not None:
            return self.graph_step(token_id, position)
        return step_static(self.model, self.cache, token_id, position, self.device)

    def _capture(self) -> None:
        """Capture the decode step as a CUDA graph: the hand-fused step when it agrees with the
        model's own forward, else the model's forward; stay eager (and say why) if both fail."""
        if self.device.type != "cuda" or not self.use_graph:
            return
        from gputui.models.common.decode_graph import GraphDecodeStep, StagedGraphDecodeStep

        fused = self._fused_step()
        if self.layer_split:  # a graph cannot span GPUs: one per stage, or stay eager
            if fused is None:
                return
            try:
                self.graph_step = StagedGraphDecodeStep(fused)
                self.decode_kind = "fused"
            except Exception as e:  # noqa: BLE001 - eager decoding still works
                self.graph_error = f"{type(e).__name__}: {e}"[:300]
            return
        try:
            self.graph_step = GraphDecodeStep(self.model, self._ensure_cache(), self.device, fused)
            self.decode_kind = "fused" if fused is not None else "stock"
            if fused is not None and not self._replay_agrees():
                self.graph_step = GraphDecodeStep(self.model, self._ensure_cache(), self.device, None)
                self.decode_kind = "stock"
        except Exception as e:  # noqa: BLE001 - eager decoding still works
            self.graph_step = None
            self.graph_error = f"{type(e).__name__}: {e}"[:300]

    def _set_up_run_ahead(self, make: Any = None) -> None:
        """For greedy replies from the fused one-GPU graph: the run-ahead graphs, kept only if
        they choose the same tokens as the step-by-step loop on a short reply."""
        if self.decode_kind != "fused" or self.layer_split or self.graph_step is None:
            return
        from gputui.models.common.decode_graph import GreedyRunAhead

        try:
            self.run_ahead = (make or GreedyRunAhead)(self.graph_step.step_fn, self.device)
            ids = self.tok.chat_ids([{"role": "user", "content": "hello"}])
            quiet = dict(emit=lambda *_a, **_k: None, cancelled=lambda: False, ignore_stop=True)
            self._decode(ids, 6, 0.0, 1.0, **quiet)  # type: ignore[arg-type]
            ahead = list(self.last_tokens)
            keep, self.run_ahead = self.run_ahead, None
            self._decode(ids, 6, 0.0, 1.0, **quiet)  # type: ignore[arg-type]
            if ahead == self.last_tokens:
                self.run_ahead = keep
            else:
                self.run_ahead_error = f"chose other tokens than the step-by-step loop ({ahead} vs {self.last_tokens})"
        except Exception as e:  # noqa: BLE001 - the step-by-step loop still decodes
            self.run_ahead = None
            self.run_ahead_error = f"{type(e).__name__}: {e}"[:300]

    def _replay_agrees(self) -> bool:
        """The captured fused step gives what it gave when run directly at the check (a kernel
        that starts early, before the one it depends on has finished, would show here)."""
        prompt, pos, want = self._check_case
        self._prefill(prompt)  # capturing ran the step at slot 0: put the prompt's cache back
        got = self.graph_step(self.tok.bos_id, pos).float()
        err = relative_error(got, want)
        if err <= REPLAY_TOLERANCE:
            return True
        self.fused_error = f"its CUDA graph disagrees with the step run directly (relative error {err:.3g})"
        return False

    def _fused_step(self) -> Any:
        """The fused step, if it runs here and its logits match the stock forward's on one
        real step after a short prompt; None (and why, in info) otherwise. The first call also
        needs its Triton kernels, compiled while the weights loaded (start_kernel_precompile)."""
        from gputui.models.glm.glm_decode import GlmDecodeStep

        self.fused_error = fused_step_unavailable(self._precompile)
        if self.fused_error is not None:
            return None
        try:
            ranges = [range(a, b) for a, b in self.layer_split] if self.layer_split else None
            step = GlmDecodeStep.from_hf(self.model, self._ensure_cache(), self.device, ranges=ranges)
            prompt = self.tok.chat_ids([{"role": "user", "content": "hello"}])
            self._prefill(prompt)
            pos = len(prompt)
            want = self._step(self.tok.bos_id, pos).float()
            got = step(torch.tensor([[self.tok.bos_id]], device=self.device),
                       torch.tensor([pos], device=self.device)).float()
            err = relative_error(got, want)
            self.fused_check = round(err, 5)
            self._check_case = (prompt, pos, got)
            if not err <= FUSED_TOLERANCE:
                self.fused_error = f"disagrees with the stock forward (relative error {err:.3g})"
                return None
            return step
        except Exception as e:  # noqa: BLE001 - the stock forward serves instead
            self.fused_error = f"{type(e).__name__}: {e}"[:300]
            return None

    @torch.inference_mode()
    def _decode(self, ids: list[int], max_new_tokens: int, temperature: float, top_p: float,
                emit: Callable[..., None], cancelled: Callable[[], bool], seed: Any = None,
                ignore_stop: bool = False) -> dict[str, Any]:
        t0 = time.monotonic()
        gen = torch.Generator(device="cpu").manual_seed(int(seed)) if seed is not None else None
        max_new_tokens = min(max_new_tokens, self.max_context - len(ids))
        logits = self._prefill(ids)
        decoder = self.tok.stream_decoder()
        stop = set() if ignore_stop else set(self.tok.stop_ids)
        first_token_at: float | None = None
        n = 0
        reason = "length"
        pos = len(ids)
        ahead = self.run_ahead if temperature <= 0 and gen is None else None
        self.last_tokens = []
        while n < max_new_tokens:
            if cancelled():
                reason = "cancelled"
                break
            if ahead is not None and n > 0:
                tid = ahead.take()
            else:
                tid = next_token(logits if gen is None else logits.float().cpu(), temperature, top_p, gen)
            n += 1
            self.last_tokens.append(tid)
            if first_token_at is None:
                first_token_at = time.monotonic()
            if tid in stop:
                reason = "stop"
                break
            if n < max_new_tokens:  # queued first: the GPU computes while this token is sent
                if ahead is None:
                    logits = self._step(tid, pos)
                    pos += 1
                else:
                    if n == 1:
                        ahead.start(tid, pos)
                    while ahead.in_flight < 2 and n + ahead.in_flight < max_new_tokens:
                        ahead.push()
            piece = decoder.push(tid)
            if piece:
                emit(piece)
        rest = decoder.flush()
        if rest:
            emit(rest)
        end = time.monotonic()
        ttft = (first_token_at or end) - t0
        decode_time = end - (first_token_at or end)
        return {"prompt_tokens": len(ids), "new_tokens": n, "ttft_s": ttft,
                "tokens_per_s": (n - 1) / decode_time if n > 1 and decode_time > 0 else None,
                "finish": reason, "cuda_graph": self.graph_step is not None, "cuda_graph_error": self.graph_error,
                "decode_path": (f"graph ({self.decode_kind}{', run ahead' if ahead is not None else ''})"
                                if self.graph_step else "eager")}
