"""Continuous batching: many replies share each read of the weights.

One thread runs the model. Requests join and leave the running batch at step boundaries, each
in a cache slot of its own (up to the model's max_batch). Per iteration: newcomers take free
slots; one decode step for every stream that has a token to feed, its rows at their own
positions; then one forward over the next prompt chunks of the newcomers (a budget of tokens,
smaller while others decode, so a long prompt does not stall them). Each row's next token is
chosen by its own request's settings (greedy, or temperature/top_p with its own seed). A reply that ends - stop token, length, the context's
end, or cancelled - frees its slot at once.

Why our own loop and not `generate()`: batched `generate()` pads every prompt to the longest and
keeps every row until the last one ends; transformers' eager GlmForCausalLM at batch 16 gave
195 tok/s on the H200 where one step over the weights can serve 16 rows in ~3.5 ms (issue 27).

The GPU's work is queued before the host's: a step is launched, then the tokens chosen by the
step before are turned into text and sent, then the step's tokens are read.
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
from gputui.models.common.sampling import next_token
from gputui.models.glm.glm_model import Segment
from gputui.models.glm.glm_steps import Launch

# While other streams decode, a prompt is prefilled this many tokens per step: on the H200 a
# 512-token chunk of ChatGLM3-6B costs about as much as a few decode steps.
INTERLEAVED_CHUNK = 512


class BatchModel(Protocol):
    """What the engine drives (glm_steps: the plain step, or its CUDA graphs)."""

    def prefill_many(self, segments: list[Segment]) -> list[torch.Tensor | None]: ...

    def decode(self, ids: list[int], slots: list[int], pos: list[int]) -> Launch: ...

    def again(self) -> Launch: ...


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
        self._emits: list[tuple[Stream, int]] = []  # tokens chosen, sent once the next launch is queued
        self._ended: list[Stream] = []
        self._inflight: tuple[list[Stream], Launch] | None = None  # a greedy step whose tokens are unread

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

    def _busy(self) -> bool:
        return bool(self.waiting or self.active or self._inflight or self._emits or self._ended)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._busy() and not self._closed:
                    self._cv.wait()
                if self._closed and not self._busy():
                    return
            try:
                self._iterate()
            except BaseException as e:  # noqa: BLE001 - every stream under way hears of it
                self._fail_all(e)

    def _iterate(self) -> bool:
        """One round: admit; launch a decode step for every stream with a token to feed; while
        the GPU runs it, send the text of the tokens read before; read the step's tokens (a
        greedy batch: the step before's, one step behind, so the GPU never waits for the host);
        then one prefill forward for the newcomers. False when nothing is left."""
        self._admit()
        for st in list(self.active):
            if st.cancelled():
                self._end(st, "cancelled")
        if self._inflight is not None:
            rows, launch = self._inflight
            self._inflight = (rows, self.model.again()) if self._can_chain(rows) else None
            self._flush()  # host work, while the GPU computes
            self._read(rows, launch)
        if self._inflight is None:
            decoding = [st for st in self.active if st.next_id is not None]
            if decoding:
                self._launch_decode(decoding)
        prefilling = [st for st in self.active if st.prefilled < len(st.prompt)]
        if prefilling:
            self._prefill_round(prefilling, busy=self._inflight is not None)
        if self._inflight is None and not any(st.next_id is not None for st in self.active):
            self._flush()  # no step comes next to send them behind
        with self._cv:
            return self._busy()

    def _can_chain(self, rows: list[Stream]) -> bool:
        """Whether the step after `rows`' step in flight may start from the tokens it chose on
        the GPU: the same streams (none ended, none joined), all greedy, each wanting more."""
        decoding = [st for st in self.active if st.next_id is not None]
        return decoding == rows and all(st.greedy and len(st.tokens) + 1 < st.max_new for st in rows)

    def _read(self, rows: list[Stream], launch: Launch) -> None:
        """A greedy step's tokens, for the streams still under way (one that ended since - a stop
        token, cancelled - had a row in it; that row's token is dropped)."""
        for st, tid in zip(rows, launch.tokens(), strict=True):
            if st.next_id is not None and st in self.active:
                self._chosen(st, tid)

    def _admit(self) -> None:
        with self._cv:
            while self.waiting and self.free:
                st = self.waiting.popleft()
                st.slot = self.free.pop(0)
                self.active.append(st)

    def _prefill_round(self, streams: list[Stream], busy: bool) -> None:
        """One forward over the next chunks of the streams still prefilling, oldest first, up to
        a budget of tokens (smaller while others decode); a stream whose prompt is done chooses
        its first token."""
        budget = INTERLEAVED_CHUNK if busy else PREFILL_CHUNK
        segments, owners = [], []
        for st in streams:
            if budget <= 0:
                break
            start = st.prefilled
            chunk = st.prompt[start:start + budget]
            budget -= len(chunk)
            st.prefilled += len(chunk)
            segments.append(Segment(st.slot, torch.tensor(chunk, device=self.device), start,
                                    logits=st.prefilled == len(st.prompt)))
            owners.append(st)
        for st, logits in zip(owners, self.model.prefill_many(segments), strict=True):
            if logits is not None:
                self._chosen(st, self._choose(st, logits))

    def _launch_decode(self, rows: list[Stream]) -> None:
        """A step from the host's tokens: greedy rows read next round (behind the following
        step); any sampling row needs the logits now."""
        for st in rows:
            st.widest_batch = max(st.widest_batch, len(rows))
        launch = self.model.decode([st.next_id or 0 for st in rows], [st.slot for st in rows],
                                   [st.pos for st in rows])
        if all(st.greedy for st in rows):
            self._inflight = (rows, launch)
            self._flush()
            return
        self._flush()  # sent while the GPU runs the step
        greedy = launch.tokens()
        for i, st in enumerate(rows):
            self._chosen(st, greedy[i] if st.greedy else self._choose(st, launch.logits[i]))

    @staticmethod
    def _choose(st: Stream, logits: torch.Tensor) -> int:
        if st.generator is not None:
            return next_token(logits.float().cpu(), st.temperature, st.top_p, st.generator)
        return next_token(logits, st.temperature, st.top_p)

    def _chosen(self, st: Stream, tid: int) -> None:
        """Record a token; its text is made and sent later, in _flush (behind the next launch)."""
        st.tokens.append(tid)
        if st.first_token_at is None:
            st.first_token_at = time.monotonic()
        if tid in st.stop:
            self._end(st, "stop")
            return
        self._emits.append((st, tid))
        if len(st.tokens) >= st.max_new:
            self._end(st, "length")
        else:
            st.next_id = tid

    def _end(self, st: Stream, reason: str) -> None:
        st.finish = reason
        st.next_id = None
        st.ended_at = time.monotonic()
        with self._cv:
            self.active.remove(st)
            self.free.append(st.slot)
        self._ended.append(st)

    def _flush(self) -> None:
        """Turn the tokens chosen so far into text and send it, then finish the streams that
        ended (their last bytes, then done)."""
        emits, self._emits = self._emits, []
        ended, self._ended = self._ended, []
        for st, tid in emits:
            if st.finish != "cancelled":  # a cancelled reply says nothing more
                self._send(st, st.decoder.push(tid))
        for st in ended:
            if st.finish != "cancelled":
                self._send(st, st.decoder.flush())
            st.done.set()

    @staticmethod
    def _send(st: Stream, piece: str) -> None:
        if not piece or st.error is not None:
            return
        try:
            st.emit(piece)
        except BaseException as e:  # noqa: BLE001 - one stream's failure is its own
            st.error = e

    def _fail_all(self, e: BaseException) -> None:
        """Every stream under way, waiting, or ended with text not yet sent gets the error."""
        with self._cv:
            streams = self.active + list(self.waiting) + self._ended
            self.active, self.waiting = [], deque()
            self.free = list(range(self.slots))
        self._emits, self._ended, self._inflight = [], [], None
        for st in streams:
            st.error = e
            st.done.set()
