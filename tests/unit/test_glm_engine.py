"""The continuous batch (glm_engine): streams that share decode steps get, greedy, exactly the
tokens they get alone; one cancelled leaves the others as they were; a stream that reaches
the context's end frees its slot for the next; newcomers join a running batch."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from gputui.models.glm.glm_engine import BatchEngine, Stream
from gputui.models.glm.glm_runtime import EagerSteps, GlmRuntime

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def runtime(tiny_chatglm3_path: Path) -> GlmRuntime:
    rt = GlmRuntime.load({"path": str(tiny_chatglm3_path), "max_context": 96, "max_batch": 3}, [CPU], torch.float32)
    rt.warm_up()
    yield rt
    assert rt.engine is not None
    rt.engine.close()


def stream(rt: GlmRuntime, text: str, n: int, out: list[int], cancel_after: int | None = None,
           temperature: float = 0.0, seed: int | None = None) -> Stream:
    ids = rt.tok.chat_ids([{"role": "user", "content": text}])
    st = rt._stream(ids, n, temperature, 0.9, seed, lambda _piece: None,
                    lambda: cancel_after is not None and len(out) >= cancel_after, ignore_stop=True)
    push = st.decoder.push

    def record(tid: int) -> str:  # every token the engine chose, in order
        out.append(tid)
        return push(tid)

    st.decoder.push = record
    return st


def run_here(rt: GlmRuntime, streams: list[Stream]) -> BatchEngine:
    """The streams on an engine of the runtime's steps, run on this thread (deterministic)."""
    assert rt.steps is not None
    engine = BatchEngine(rt.steps, rt.max_batch, CPU)
    for st in streams:
        engine.submit(st)
    engine.run_until_idle()
    return engine


PROMPTS = [("tell me about the sea", 12), ("hi", 5), ("a longer question about many things", 9),
           ("fourth, waits for a slot", 7)]


def alone(rt: GlmRuntime) -> list[list[int]]:
    out = []
    for text, n in PROMPTS:
        toks: list[int] = []
        run_here(rt, [stream(rt, text, n, toks)])
        out.append(toks)
    return out


def test_batched_streams_choose_what_they_choose_alone(runtime: GlmRuntime) -> None:
    want = alone(runtime)
    got: list[list[int]] = [[] for _ in PROMPTS]
    streams = [stream(runtime, text, n, got[i]) for i, (text, n) in enumerate(PROMPTS)]
    engine = run_here(runtime, streams)
    assert got == want
    assert [st.finish for st in streams] == ["length"] * 4
    assert max(st.widest_batch for st in streams) == 3  # three slots shared, the fourth waited
    assert sorted(engine.free) == [0, 1, 2] and not engine.active


def test_cancelling_one_stream_leaves_the_others_alone(runtime: GlmRuntime) -> None:
    want = alone(runtime)
    got: list[list[int]] = [[] for _ in PROMPTS]
    streams = [stream(runtime, text, n, got[i], cancel_after=3 if i == 0 else None)
               for i, (text, n) in enumerate(PROMPTS)]
    run_here(runtime, streams)
    # seen within a round of the third token's text; nothing is sent after
    assert streams[0].finish == "cancelled" and 3 <= len(got[0]) <= 4 and got[0] == want[0][: len(got[0])]
    assert len(streams[0].tokens) <= len(got[0]) + 1
    assert got[1:] == want[1:]


def test_a_stream_at_the_context_end_frees_its_slot(runtime: GlmRuntime) -> None:
    k = 60
    while len(runtime.tok.chat_ids([{"role": "user", "content": "word " * k}])) > 88:
        k -= 1
    toks: list[int] = []
    st = stream(runtime, "word " * k, 50, toks)
    assert st.max_new == runtime.max_context - len(st.prompt)  # cut to what the context holds
    nxt: list[int] = []
    later = [stream(runtime, "hi", 4, nxt) for _ in range(3)]
    run_here(runtime, [st, *later])
    assert st.finish == "length" and len(toks) == st.max_new
    assert all(s.finish == "length" for s in later) and len(nxt) == 12


def test_seeded_sampling_is_per_request(runtime: GlmRuntime) -> None:
    """A seeded request samples the same tokens whatever shares its batch."""
    first: list[int] = []
    run_here(runtime, [stream(runtime, "sample this", 8, first, temperature=1.0, seed=7)])
    again: list[int] = []
    others: list[list[int]] = [[], []]
    run_here(runtime, [stream(runtime, "other", 8, others[0], temperature=1.0, seed=1),
                       stream(runtime, "sample this", 8, again, temperature=1.0, seed=7),
                       stream(runtime, "greedy", 8, others[1])])
    assert again == first


def test_requests_on_threads_share_the_running_engine(runtime: GlmRuntime) -> None:
    """Through generate(), as the worker calls it (a thread per request)."""
    replies: dict[int, tuple[str, dict]] = {}

    def ask(i: int) -> None:
        pieces: list[str] = []
        req = {"messages": [{"role": "user", "content": f"question {i}"}],
               "params": {"max_new_tokens": 6, "temperature": 0.0, "ignore_stop": True}}
        stats = runtime.generate(req, lambda piece, **_k: pieces.append(piece), lambda: False)
        replies[i] = ("".join(pieces), stats)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(replies) == list(range(5))
    assert all(s["new_tokens"] == 6 and s["finish"] == "length" for _, s in replies.values())
    # each the same as asked alone
    for i in (0, 4):
        pieces: list[str] = []
        req = {"messages": [{"role": "user", "content": f"question {i}"}],
               "params": {"max_new_tokens": 6, "temperature": 0.0, "ignore_stop": True}}
        runtime.generate(req, lambda piece, _p=pieces, **_k: _p.append(piece), lambda: False)
        assert "".join(pieces) == replies[i][0]


def test_eager_steps_is_what_the_cpu_runs(runtime: GlmRuntime) -> None:
    assert isinstance(runtime.steps, EagerSteps) and runtime.info()["max_batch"] == 3


class FailingSteps:
    """The runtime's steps, failing on the `fail_at`-th decode launch (a CUDA error mid-batch)."""

    def __init__(self, steps, fail_at: int) -> None:  # noqa: ANN001
        self.steps, self.fail_at, self.launches = steps, fail_at, 0

    def prefill_many(self, segments):  # noqa: ANN001, ANN201
        return self.steps.prefill_many(segments)

    def _count(self) -> None:
        self.launches += 1
        if self.launches == self.fail_at:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    def decode(self, ids, slots, pos):  # noqa: ANN001, ANN201
        self._count()
        return self.steps.decode(ids, slots, pos)

    def again(self):  # noqa: ANN201
        self._count()
        return self.steps.again()


def test_a_failing_step_ends_every_stream_with_its_error_and_the_engine_goes_on(runtime: GlmRuntime) -> None:
    """Every reply under way hears the error (the worker then reports it and, for a CUDA error,
    exits); none waits for ever; the slots are free for what comes next."""
    assert runtime.steps is not None
    engine = BatchEngine(FailingSteps(runtime.steps, fail_at=4), runtime.max_batch, CPU)
    outs: list[list[int]] = [[] for _ in range(4)]
    streams = [stream(runtime, f"question {i}", 20, outs[i]) for i in range(4)]  # the fourth waits for a slot
    for st in streams:
        engine.submit(st)
    engine.start()
    for st in streams:
        assert st.done.wait(60)
    errors = [st.error for st in streams]
    assert all(isinstance(e, RuntimeError) and "illegal memory access" in str(e) for e in errors), errors
    assert sorted(engine.free) == [0, 1, 2] and not engine.active
    after: list[int] = []
    assert engine.answer(stream(runtime, "after", 3, after))["new_tokens"] == 3  # it still answers
    engine.close()
