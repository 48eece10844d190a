"""Kind causal-lm: any causal LM transformers ships (Llama, Mistral, Qwen2, Qwen3), in a worker.

The model is transformers' own (AutoModelForCausalLM, safetensors only, trust_remote_code off);
the decode loop is ours, as for the other kinds: the prompt prefilled in bounded chunks into a
static KV cache (the memory the preflight counted, taken at warm-up), then one step per token,
replayed as a CUDA graph on a GPU (checked against the model's own forward at warm-up, eager if
they disagree), a cancel seen within one token, stop at the chat template's stop tokens or the
request's stop strings, and a conversation longer than the context cut from its oldest turns.

Llama, Mistral and Qwen2 compute their prefill and steps on gputui's own decoder
(llama_decoder.py, over the same weights) where it fits them and agrees with transformers'
forward at warm-up; the others, and any that disagree, on transformers' forward.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from gputui.core import env
from gputui.core.checkpoint_info import CheckpointError, read_json
from gputui.core.kinds import PREFILL_CHUNK, check_kind, kind_named
from gputui.models.common.decode_graph import relative_error
from gputui.models.common.hf import prefill_static, step_static
from gputui.models.common.sampling import next_token
from gputui.models.glm.chatglm3_tokenizer import IncrementalDecoder
from gputui.models.glm.glm_checks import PRECOMPILE_TIMEOUT_S
from gputui.models.glm.glm_prompt import dropped_notice, prompt_too_long, reply_budget
from gputui.models.glm.glm_steps import GraphSteps
from gputui.models.llama_decoder import SUPPORTED, OwnDecoder, refusal, start_precompile

# A graph step is kept when its logits match the eager forward's to this (relative L2); the
# same kernels replayed compute the same numbers, so anything over noise means a wrong capture.
GRAPH_TOLERANCE = 1e-2
# The own decoder's prefill chunk: the preflight counts transformers' activations for a 2048-token
# chunk (233 MiB over the weights for Llama-3-8B on the H200); ours peaked at 353-449 MiB there
# (unjoined q/k/v outputs, fp32 norm statistics), so it prefills half as much at a time.
OWN_PREFILL_CHUNK = PREFILL_CHUNK // 2


class ChatTokenizer:
    """The checkpoint's tokenizer (tokenizer.json) and chat template, in the shape the decode
    loop and IncrementalDecoder use."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
        if not getattr(self.tok, "chat_template", None):
            raise CheckpointError(f"{path}: its tokenizer has no chat template (tokenizer_config.json "
                                  "chat_template, or chat_template.jinja); gputui needs one to format a conversation")
        self.bos_id = self.tok.bos_token_id if self.tok.bos_token_id is not None else 0
        stops = set()
        for f in ("generation_config.json", "config.json"):
            eos = read_json(path / f).get("eos_token_id") if (path / f).is_file() else None
            stops |= set(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
        if self.tok.eos_token_id is not None:
            stops.add(self.tok.eos_token_id)
        self.stop_ids = tuple(sorted(stops))

    def chat_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        msgs = [{"role": m["role"], "content": m.get("content", "")} for m in messages]
        ids = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
        return list(ids["input_ids"] if isinstance(ids, dict) else ids)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return str(self.tok.decode(ids, skip_special_tokens=skip_special_tokens))

    def stream_decoder(self) -> IncrementalDecoder:
        return IncrementalDecoder(self)  # type: ignore[arg-type]


def fit_messages(tok: ChatTokenizer, max_context: int, messages: list[dict[str, Any]], max_new: int
                 ) -> tuple[list[int], int]:
    """Prompt ids that fit with room for the reply, dropping the oldest turns (never a system
    prompt, never the last message). A template renders a conversation as a whole, so it is
    rendered again per dropped turn (a few ms each)."""
    budget = max_context - max_new
    msgs = list(messages)
    first = 1 if msgs and msgs[0].get("role") == "system" else 0
    dropped = 0
    ids = tok.chat_ids(msgs)
    while len(ids) > budget:
        if len(msgs) - first <= 1:
            raise prompt_too_long(len(ids), budget)
        del msgs[first]
        dropped += 1
        ids = tok.chat_ids(msgs)
    return ids, dropped


def fast_load(path: Path, device: torch.device, dtype: torch.dtype) -> Any:
    """The model built on the meta device and its weights read straight to the GPU by
    fast_load (25-29 GiB/s on the H200, where from_pretrained took 2.7 s for 16 GB), or None
    when this architecture's modules do not fit that (from_pretrained then). Buffers that are
    not in the checkpoint (the rotary frequencies) are made again on the device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from gputui.core.checkpoint_info import weight_files
    from gputui.models.common.fast_load import read_tensors

    fmt, files = weight_files(path)
    if fmt != "safetensors":
        return None
    config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
    state = {name: t.to(dtype) if t.is_floating_point() else t for name, t in read_tensors(files, device)}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = {k for k in missing if getattr(config, "tie_word_embeddings", False) and k == "lm_head.weight"}
    if set(missing) - tied or unexpected:
        return None
    if tied:
        model.tie_weights()
    for name, module in list(model.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)):
            if not type(module).__name__.endswith("RotaryEmbedding"):
                return None
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, type(module)(config=config).to(device))
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        return None
    return model


class CausalLMRuntime:
    """The Runtime of kind causal-lm (models/common/runtime.py)."""

    def __init__(self, model: Any, tok: ChatTokenizer, device: torch.device, max_context: int) -> None:
        self.model, self.tok, self.device, self.max_context = model, tok, device, max_context
        self.cache: Any = None
        self.graph: Any = None
        self.graph_error: str | None = None
        self.load_seconds = 0.0
        self.own: OwnDecoder | None = None  # gputui's decoder, when it computes this model
        self.own_refusal: str | None = None  # why not
        self.precompile: threading.Thread | None = None  # its kernels, compiling while the weights load

    @classmethod
    def load(cls, spec: dict[str, Any], devices: list[torch.device], dtype: torch.dtype) -> CausalLMRuntime:
        from transformers import AutoModelForCausalLM

        path = Path(spec["path"])
        cfg = check_kind(kind_named("causal-lm"), path)  # the preflight's checks, again
        tok = ChatTokenizer(path)
        device = devices[0]
        max_context = min(int(spec.get("max_context") or kind_named("causal-lm").default_context),
                          int(cfg.get("max_position_embeddings") or 1 << 30))
        precompile = None
        if cfg.get("model_type") in SUPPORTED and env.get("GPUTUI_CAUSAL_DECODER") != "transformers":
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
            precompile = start_precompile(config, device, dtype, max_context)
        t0 = time.monotonic()
        model = fast_load(path, device, dtype) if device.type == "cuda" else None
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, device_map={"": str(device)},
                                                         trust_remote_code=False, use_safetensors=True)
        model.eval()
        from gputui.models.common.gqa_attention import use_gqa_attention

        use_gqa_attention(model)  # a decode step reads each KV head once, not once per query head
        rt = cls(model, tok, device, max_context)
        rt.load_seconds = time.monotonic() - t0
        rt.precompile = precompile
        return rt

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def cache_bytes(self) -> int:
        from gputui.models.common.hf import layer_kv

        if self.own is not None:
            return self.own.cache_bytes()
        total = 0
        for i in range(len(self.cache.layers)):
            for t in layer_kv(self.cache, i):
                total += t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0
        return total

    def info(self) -> dict[str, Any]:
        return {"max_context": self.max_context, "architecture": self.model.config.model_type,
                "cuda_graph": self._graphed(), "cuda_graph_error": self.graph_error,
                "decode": "graph" if self._graphed() else "eager", "decoder": self._decoder(),
                "own_decoder_refusal": self.own_refusal,
                "load": {"from_pretrained_s": round(self.load_seconds, 3)}}

    def _graphed(self) -> bool:
        return isinstance(self.own.steps, GraphSteps) if self.own is not None else self.graph is not None

    def _decoder(self) -> str:
        return f"gputui ({self.own.kernels})" if self.own is not None else "transformers"

    # -- warm-up ---------------------------------------------------------------------------

    def warm_up(self) -> None:
        """The static cache for the whole context and one full prefill chunk of activations now;
        the decode graph captured and checked; a short reply."""
        from transformers import StaticCache

        n = min(PREFILL_CHUNK, self.max_context - 4)
        self.own = self._own_decoder()
        if self.own is None:
            self.cache = StaticCache(config=self.model.config, max_cache_len=self.max_context)
            self._prefill([self.tok.bos_id] * n)
            if self.device.type == "cuda":
                self._capture()
        else:
            self._prefill([self.tok.bos_id] * n)
        quiet = dict(emit=lambda *_a, **_k: None, cancelled=lambda: False)
        self._decode(self.tok.chat_ids([{"role": "user", "content": "hi"}]), 3, 0.0, 1.0, None, True, **quiet)  # type: ignore[arg-type]

    def _own_decoder(self) -> OwnDecoder | None:
        """gputui's decoder over this model's weights, checked against transformers' forward
        (prefill and a step, then the step again as a CUDA graph), or None and why (own_refusal)."""
        if env.get("GPUTUI_CAUSAL_DECODER") == "transformers":
            self.own_refusal = "GPUTUI_CAUSAL_DECODER=transformers"
            return None
        self.own_refusal = refusal(self.model, self.max_context)
        if self.own_refusal is not None:
            return None
        if self.precompile is not None:
            self.precompile.join(PRECOMPILE_TIMEOUT_S)  # a hung compiler must not hang the load
        own: OwnDecoder | None = None
        try:
            own = OwnDecoder(self.model, self.device, self.max_context, OWN_PREFILL_CHUNK,
                             graph=self.device.type == "cuda")
            self.own_refusal = self._check_own(own)
        except torch.cuda.OutOfMemoryError:
            raise  # transformers' cache is as large: the load fails, as it should, with the OOM
        except Exception as e:  # noqa: BLE001 - a kernel that fails here: transformers' forward serves
            self.own_refusal = f"{type(e).__name__}: {e}"[:300]
        if self.own_refusal is not None:
            own = None  # its cache goes before transformers' is taken
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return own

    def _check_own(self, own: OwnDecoder) -> str | None:
        prompt = self.tok.chat_ids([{"role": "user", "content": "hello"}])
        why = own.disagreement(self.model, prompt)
        if why is not None:
            return why
        eager = own.step(prompt[-1], len(prompt))
        own.capture()
        self.graph_error = own.graph_error
        own.prefill(prompt)  # capturing stepped at position 0: the prompt again, then the graph
        err = relative_error(own.step(prompt[-1], len(prompt)), eager)
        if err > GRAPH_TOLERANCE:
            return f"its CUDA graph disagrees with its step run directly (relative error {err:.3g})"
        return None

    def _capture(self) -> None:
        from gputui.models.common.decode_graph import GraphDecodeStep

        try:
            prompt = self.tok.chat_ids([{"role": "user", "content": "hello"}])
            self._prefill(prompt)
            want = self._eager_step(self.tok.bos_id, len(prompt)).float()
            graph = GraphDecodeStep(self.model, self.cache, self.device)
            self._prefill(prompt)  # capturing ran the step at position 0: put the prompt back
            got = graph(self.tok.bos_id, len(prompt)).float()
            err = relative_error(got, want)
            if err > GRAPH_TOLERANCE:
                self.graph_error = f"the CUDA graph disagrees with the model's forward (relative error {err:.3g})"
                return
            self.graph = graph
        except Exception as e:  # noqa: BLE001 - eager decoding still works
            self.graph_error = f"{type(e).__name__}: {e}"[:300]

    # -- chat ------------------------------------------------------------------------------

    def generate(self, req: dict[str, Any], emit: Callable[..., None], cancelled: Callable[[], bool]) -> dict[str, Any]:
        params = req.get("params") or {}
        max_new = reply_budget(params, self.max_context)
        ids, dropped = fit_messages(self.tok, self.max_context, list(req.get("messages") or []), max_new)
        if dropped:
            emit("", notice=dropped_notice(self.max_context, dropped))
        stats = self._decode(ids, max_new, float(params.get("temperature", 0.7)), float(params.get("top_p", 0.9)),
                             params.get("seed"), bool(params.get("ignore_stop", False)), emit, cancelled)
        stats["dropped_messages"] = dropped
        return stats

    def _prefill(self, ids: list[int]) -> torch.Tensor:
        if self.own is not None:
            return self.own.prefill(ids)
        return prefill_static(self.model, self.cache, ids, self.device, PREFILL_CHUNK)

    def _eager_step(self, token_id: int, position: int) -> torch.Tensor:
        return step_static(self.model, self.cache, token_id, position, self.device)

    def _step(self, token_id: int, position: int) -> torch.Tensor:
        if self.own is not None:
            return self.own.step(token_id, position)
        return self.graph(token_id, position) if self.graph is not None else self._eager_step(token_id, position)

    def _sampled(self, logits: torch.Tensor, pos: int, max_new: int, temperature: float, top_p: float,
                 gen: torch.Generator | None) -> Iterator[int]:
        """The reply's tokens, each chosen on the host from the last step's logits; the step for a
        token is queued before it is handed out (the GPU computes while it is sent)."""
        n = 0
        while True:
            tid = next_token(logits if gen is None else logits.float().cpu(), temperature, top_p, gen)
            n += 1
            if n < max_new:
                logits = self._step(tid, pos)
                pos += 1
            yield tid

    def _greedy_ahead(self, logits: torch.Tensor, pos: int, max_new: int) -> Iterator[int]:
        """Greedy tokens on the own decoder, a step ahead of the host: each step chooses its token
        on the device and feeds it to the next (glm_steps' `again`), so step k+1 is queued before
        step k's token is read and the GPU never waits for the host between tokens (the host's
        turn took ~1 % of a Llama-3-8B step on the H200)."""
        assert self.own is not None
        steps = self.own.steps
        tid, n = int(torch.argmax(logits).item()), 1
        launch = steps.decode([tid], [0], [pos]) if n < max_new else None
        while True:
            ahead = steps.again() if launch is not None and n + 1 < max_new else None
            yield tid
            if launch is None:
                return
            tid, n, launch = launch.tokens()[0], n + 1, ahead

    @torch.inference_mode()
    def _decode(self, ids: list[int], max_new: int, temperature: float, top_p: float, seed: Any,
                ignore_stop: bool, emit: Callable[..., None], cancelled: Callable[[], bool]) -> dict[str, Any]:
        t0 = time.monotonic()
        gen = torch.Generator(device="cpu").manual_seed(int(seed)) if seed is not None else None
        max_new = min(max_new, self.max_context - len(ids))
        logits = self._prefill(ids)
        decoder = self.tok.stream_decoder()
        stop = set() if ignore_stop else set(self.tok.stop_ids)
        first: float | None = None
        n, reason = 0, "length"
        if self.own is not None and temperature <= 0:
            tokens = self._greedy_ahead(logits, len(ids), max_new)
        else:
            tokens = self._sampled(logits, len(ids), max_new, temperature, top_p, gen)
        while n < max_new:
            if cancelled():
                reason = "cancelled"
                break
            tid = next(tokens)
            n += 1
            first = first or time.monotonic()
            if tid in stop:
                reason = "stop"
                break
            piece = decoder.push(tid)
            if piece:
                emit(piece)
        rest = decoder.flush()
        if rest and reason != "cancelled":
            emit(rest)
        end = time.monotonic()
        return {"prompt_tokens": len(ids), "new_tokens": n, "ttft_s": (first or end) - t0,
                "tokens_per_s": (n - 1) / (end - first) if first and n > 1 and end > first else None,
                "finish": reason, "cuda_graph": self._graphed(), "cuda_graph_error": self.graph_error,
                "decode_path": "graph" if self._graphed() else "eager", "decoder": self._decoder()}
