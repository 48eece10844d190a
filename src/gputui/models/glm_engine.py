"""Continuous batching: many replies share each read of the weights.

One thread runs the model. Requests join and leave the running batch at step boundaries, each
in a cache slot of its own (up to the model's max_batch). Per iteration: newcomers take free
slots; one prompt chunk is prefilled (smaller while others decode, so a long prompt does not
stall them); then one decode step for every stream that has a token to feed, its rows at their
own positions. Each row's next token is chosen by its own request's settings (greedy, or
temperature/top_p with its own seed). A reply that ends - stop token, length, the context's
end, or cancelled - frees its slot at once.

Why our own loop and not `generate()`: batched `generate()` pads every prompt to the longest and
keeps every row until the last one ends; transformers' eager GlmForCausalLM at batch 16 gave
195 tok/s on the H200 where one step over the weights can serve 16 rows in ~3.5 ms (issue 27).

The GPU's work is queued before the host's: a step is launched, then the pieces chosen by the
step before are sent, then the step's tokens are read.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from gputui.core.kinds import PREFILL_CHUNK
from gputui.models.sampling import next_token

# While other streams decode, a prompt is prefilled this many tokens per step: on the H200 a
# 512-token chunk of ChatGLM3-6B costs about as much as a few decode steps.
INTERLEAVED_CHUNK = 512


class BatchModel(Protocol):
    """What the engine drives (glm_model.GlmModel, or its CUDA graphs)."""

    def prefill(self, slot: int, ids: torch.Tensor, start: int, logits: bool = True) -> torch.Tensor | None: ...

    def decode(self, ids: list[int], slots: list[int], pos: list[int]) -> torch.Tensor: ...


@dataclass
class Stream:
    """One reply in the batch."""

    prompt: list[int]
    max_new: int
    temperature: float
    top_p: float
    emit: Callable[..., None]
    cancelled: Callable[[], bool]
    decoder: Any  # the tokenizer's incremental decoder
    stop: frozenset[int]
    generator: torch.Generator | None = None
    slot: int = -1
    prefilled: int = 0
    next_id: int | None = None  # the token to feed next, at position `pos`
    tokens: list[int] = field(default_factory=list)
    finish: str | None = None
    error: BaseException | None = None
    t0: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    ended_at: float | None = None
    widest_batch: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def pos(self) -> int:
        return len(self.prompt) + len(self.tokens) - 1

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0 and self.generator is None

    def stats(self) -> dict[str, Any]:
        end = self.ended_at or time.monotonic()
        first = self.first_token_at or end
        n = len(self.tokens)
        decode_time = end - first
        return {"prompt_tokens": len(self.prompt), "new_tokens": n, "ttft_s": first - self.t0,
                "tokens_per_s": (n - 1) / decode_time if n > 1 and decode_time > 0 else None,
                "finish": self.finish or "length", "batch_peak": self.widest_batch}


class BatchEngine:
    def __init__(self, model: BatchModel, slots: int, device: torch.device) -> None:
        self.model, self.device = model, device
        self.free = list(range(slots))
        self.slots = slots
        self.waiting: deque[Stream] = deque()
        self.active: list[Stream] = []
        self._cv = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._emits: list[tuple[Stream, str]] = []  # pieces chosen, sent once the next launch is queued
        self._ended: list[Stream] = []

    # -- the requests' side (any thread) ---------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gputui-batch", daemon=True)
        self._thread.start()

    def submit(self, stream: Stream) -> None:
        with self._cv:
            if self._closed:
                raise RuntimeError("the model is shutting down")
            self.waiting.append(stream)
            self._cv.notify()

    def answer(self, stream: Stream) -> dict[str, Any]:
        """Submit and wait for the reply's end: its stats, or the error that ended it."""
        self.submit(stream)
        stream.done.wait()
        if stream.error is not None:
            raise stream.error
        return stream.stats()

    def in_use(self) -> int:
        with self._cv:
            return len(self.active)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join()

    def run_until_idle(self) -> None:
        """Run the loop on this thread until no stream is left (warm-up, tests)."""
        while self._iterate():
            pass

    # -- the loop (its own thread) ---------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self.waiting and not self.active and not self._closed:
                    self._cv.wait()
                if self._closed and not self.waiting and not self.active:
                    return
            try:
                self._iterate()
            except BaseException as e:  # noqa: BLE001 - every stream under way hears of it
                self._fail_all(e)

    def _iterate(self) -> bool:
        """One round: admit, one prefill chunk, one decode step. False when nothing is left."""
        self._admit()
        for st in list(self.active):
            if st.cancelled():
                self._end(st, "cancelled")
        prefilling = next((st for st in self.active if st.prefilled < len(st.prompt)), None)
        decoding = [st for st in self.active if st.next_id is not None]
        if prefilling is not None:
            self._prefill_chunk(prefilling, busy=bool(decoding))
        if decoding:
            self._decode_step(decoding)
        self._flush()
        with self._cv:
            return bool(self.active or self.waiting)

    def _admit(self) -> None:
        with self._cv:
            while self.waiting and self.free:
                st = self.waiting.popleft()
                st.slot = self.free.pop(0)
                self.active.append(st)

    def _prefill_chunk(self, st: Stream, busy: bool) -> None:
        n = INTERLEAVED_CHUNK if busy else PREFILL_CHUNK
        start = st.prefilled
        chunk = st.prompt[start:start + n]
        last = start + len(chunk) == len(st.prompt)
        logits = self.model.prefill(st.slot, torch.tensor(chunk, device=self.device), start, logits=last)
        self._flush()  # queued behind the chunk: the pieces of the step before
        st.prefilled += len(chunk)
        if last:
            assert logits is not None
            self._chosen(st, self._choose(st, logits))

    def _decode_step(self, rows: list[Stream]) -> None:
        for st in rows:
            st.widest_batch = max(st.widest_batch, len(rows))
        logits = self.model.decode([st.next_id or 0 for st in rows], [st.slot for st in rows], [st.pos for st in rows])
        self._flush()  # sent while the GPU runs the step
        greedy = [i for i, st in enumerate(rows) if st.greedy]
        chosen: dict[int, int] = {}
        if greedy:
            picked = logits[greedy].argmax(-1).tolist() if len(greedy) < len(rows) else logits.argmax(-1).tolist()
            chosen.update(zip(greedy, picked, strict=True))
        for i, st in enumerate(rows):
            if i not in chosen:
                chosen[i] = self._choose(st, logits[i])
        for i, st in enumerate(rows):
            self._chosen(st, chosen[i])

    @staticmethod
    def _choose(st: Stream, logits: torch.Tensor) -> int:
        if st.generator is not None:
            return next_token(logits.float().cpu(), st.temperature, st.top_p, st.generator)
        return next_token(logits, st.temperature, st.top_p)

    def _chosen(self, st: Stream, tid: int) -> None:
        st.tokens.append(tid)
        if st.first_token_at is None:
            st.first_token_at = time.monotonic()
        if tid in st.stop:
            self._end(st, "stop")
            return
        piece = st.decoder.push(tid)
        if piece:
            self._emits.append((st, piece))
        if len(st.tokens) >= st.max_new:
            self._end(st, "length")
        else:
            st.next_id = tid

    def _end(self, st: Stream, reason: str) -> None:
        st.finish = reason
        st.next_id = None
        st.ended_at = time.monotonic()
        if reason != "cancelled":
            rest = st.decoder.flush()
            if rest:
                self._emits.append((st, rest))
        with self._cv:
            self.active.remove(st)
            self.free.append(st.slot)
        self._ended.append(st)

    def _flush(self) -> None:
        """Send the pieces chosen so far, then tell the streams that ended (after their pieces)."""
        emits, self._emits = self._emits, []
        for st, piece in emits:
            try:
                st.emit(piece)
            except BaseException as e:  # noqa: BLE001 - one stream's failure is its own
                st.error = st.error or e
        ended, self._ended = self._ended, []
        for st in ended:
            st.done.set()

    def _fail_all(self, e: BaseException) -> None:
        with self._cv:
            streams = self.active + list(self.waiting)
            self.active, self.waiting = [], deque()
            self.free = list(range(self.slots))
        self._emits, self._ended = [], []
        for st in streams:
            st.error = e
            st.done.set()
