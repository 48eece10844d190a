"""One decode step of a causal LM, captured once as a CUDA graph and replayed per token.

At batch 1 a 6B model's decode step is hundreds of small kernels; launching them from Python
costs more than running them (measured: eager generate reached 15% of the memory-bandwidth
roofline on an H100). A static KV cache gives every step the same shapes and addresses, so the
step can be captured once (a fraction of a second, no compiler) and replayed.
"""

from __future__ import annotations

from typing import Any

import torch


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """How far a step's logits are from the reference's (relative L2): the one measure every
    runtime checks its fused step and its captured graph with."""
    got, want = got.float(), want.float()
    return float((got - want).norm() / want.norm().clamp_min(1e-6))


def capture(fn: Any, device: torch.device, pool: Any = None) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Run `fn` twice on a side stream (lazy init and autotuning stay outside the graph), then
    capture it on `device`; returns the graph and what the captured call returned. `pool`:
    share another graph's memory pool (graphs that are never replayed at once)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.device(device):
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        with torch.cuda.graph(graph, pool=pool):
            out = fn()
    return graph, out


class GraphDecodeStep:
    def __init__(self, model: Any, cache: Any, device: torch.device, step_fn: Any = None) -> None:
        self.model, self.cache, self.device = model, cache, device
        if step_fn is None:  # transformers' model: its forward takes the cache by a keyword
            from gputui.models.common.hf import cache_keyword

            self.cache_kw = cache_keyword(model)
        self.step_fn = step_fn  # e.g. the fused step (glm_decode); None: the model's own forward
        self.ids = torch.zeros(1, 1, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.graph, self.logits = capture(self._forward, device)

    @torch.inference_mode()
    def _forward(self) -> torch.Tensor:
        if self.step_fn is not None:
            return self.step_fn(self.ids, self.pos)
        out = self.model(input_ids=self.ids, **{self.cache_kw: self.cache}, cache_position=self.pos,
                         use_cache=True)
        return out.logits[0, -1]

    def __call__(self, token_id: int, position: int) -> torch.Tensor:
        self.ids.fill_(token_id)
        self.pos.fill_(position)
        self.graph.replay()
        return self.logits


class StagedGraphDecodeStep:
    """The fused step of a model split over GPUs: one CUDA graph per stage, each captured and
    replayed on its own device, with the residual stream (one hidden-size vector) copied from
    stage to stage between replays. A graph cannot span devices; the copy between them costs
    one small transfer per GPU boundary and token."""

    def __init__(self, step: Any) -> None:
        self.step = step
        self.stages = step.stages
        first = self.stages[0].device
        self.ids = torch.zeros(1, 1, dtype=torch.long, device=first)
        self.pos = [torch.zeros(1, dtype=torch.long, device=st.device) for st in self.stages]
        captured = [capture(lambda k=k: step.run_stage(k, self.ids, self.pos[k]), st.device)
                    for k, st in enumerate(self.stages)]
        self.graphs = [graph for graph, _ in captured]
        self.logits: torch.Tensor = captured[-1][1]  # the last stage returns the logits

    def __call__(self, token_id: int, position: int) -> torch.Tensor:
        self.ids.fill_(token_id)
        for p in self.pos:
            p.fill_(position)
        for k, (st, graph) in enumerate(zip(self.stages, self.graphs, strict=True)):
            if k:
                # ordered after the previous stage's replay and before this one's: torch syncs a
                # copy between devices with both devices' current streams
                st.res.copy_(self.stages[k - 1].res)
            with torch.cuda.device(st.device):
                graph.replay()
        return self.logits


class GreedyRunAhead:
    """Greedy decoding with the GPU kept a step ahead of the host.

    Why: with one graph replay per token, the GPU waits between tokens while the host reads the
    token, decides and launches the next replay (the token loop ran 3 % below the step's own
    rate on the H200). Here each captured step ends by choosing its token on the GPU (argmax)
    and feeding it to the next step there; an async copy after the replay brings it to pinned
    host memory, and the host queues the next replay before it reads a token. Two copies of the graph alternate, one host slot each,
    so at most two steps are in flight and neither overwrites a token not yet read.
    `EagerRunAhead` is the same without graphs (the CPU; tests)."""

    def __init__(self, step_fn: Any, device: torch.device) -> None:
        self.ids = torch.zeros(1, 1, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.tokens = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(2)]
        self.slots = [torch.zeros(1, dtype=torch.long, pin_memory=True) for _ in range(2)]
        self.done = [torch.cuda.Event() for _ in range(2)]
        self.step_fn = step_fn
        self.graphs = [capture(lambda k=k: self._body(k), device)[0] for k in range(2)]
        self.queue: list[int] = []
        self.next = 0

    def _body(self, k: int) -> None:
        token = torch.argmax(self.step_fn(self.ids, self.pos)).view(1, 1)
        self.ids.copy_(token)
        self.pos.add_(1)
        self.tokens[k].copy_(token.view(1))

    def start(self, token_id: int, position: int) -> None:
        """The first step's input: the token chosen after the prompt, at the prompt's end."""
        self.ids.fill_(token_id)
        self.pos.fill_(position)
        self.queue.clear()

    @property
    def in_flight(self) -> int:
        return len(self.queue)

    def push(self) -> None:
        """Queue one more step (at most two in flight)."""
        assert len(self.queue) < 2
        k, self.next = self.next, 1 - self.next
        self._launch(k)
        self.queue.append(k)

    def _launch(self, k: int) -> None:
        self.graphs[k].replay()
        # to the host outside the graph: a plain async copy, queued behind the replay
        self.slots[k].copy_(self.tokens[k], non_blocking=True)
        self.done[k].record()

    def take(self) -> int:
        """The oldest queued step's token (waits for that step only)."""
        k = self.queue.pop(0)
        self.done[k].synchronize()
        return int(self.slots[k][0])


class EagerRunAhead(GreedyRunAhead):
    """GreedyRunAhead's contract, each step run when pushed (no graph, no events)."""

    def __init__(self, step_fn: Any, device: torch.device) -> None:
        self.ids = torch.zeros(1, 1, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.tokens = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(2)]
        self.slots = self.tokens
        self.step_fn = step_fn
        self.queue = []
        self.next = 0

    def _launch(self, k: int) -> None:
        with torch.inference_mode():
            self._body(k)

    def take(self) -> int:
        return int(self.slots[self.queue.pop(0)][0])
