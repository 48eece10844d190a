"""The decode steps the continuous batch runs (glm_engine), on the CPU or as CUDA graphs.

Every step also chooses each row's greedy token on the device and feeds it to its own next
step: `again()` runs the step after the last one without the host in between. The engine uses
that when every row is greedy and the batch is unchanged, so the GPU starts step k+1 while the
host is still turning step k's tokens into text (with one stream, the loop ran 4 % below the
graph's own rate before; 8 streams, 8 % below).
"""

from __future__ import annotations

from typing import Any

import torch

from gputui.models.glm.glm_model import GlmModel, GlmShape, Segment


class Launch:
    """One step under way: its logits (valid until the next step is launched) and its greedy
    tokens (read when wanted; waiting for this step only)."""

    def __init__(self, logits: torch.Tensor, tokens: torch.Tensor, done: Any = None) -> None:
        self.logits, self._tokens, self._done = logits, tokens, done

    def tokens(self) -> list[int]:
        if self._done is not None:
            self._done.synchronize()
        return [int(t) for t in self._tokens.tolist()]


def advance(inputs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """After a step over inputs [3, b] (tokens, slots, positions): each row's greedy token
    becomes its next input, one position on; padding rows (position -1) stay padding."""
    nxt = logits.argmax(-1)
    inputs[0].copy_(nxt)
    inputs[2].copy_(torch.where(inputs[2] >= 0, inputs[2] + 1, inputs[2]))
    return nxt


class EagerSteps:
    """The plain step, run as called (the CPU; a GPU where graphs failed)."""

    def __init__(self, model: GlmModel) -> None:
        self.model = model
        self.device = model.w.device
        self._next: torch.Tensor | None = None

    def prefill_many(self, segments: list[Segment]) -> list[torch.Tensor | None]:
        return self.model.prefill_many(segments)

    def decode(self, ids: list[int], slots: list[int], pos: list[int]) -> Launch:
        return self._run(torch.tensor([ids, slots, pos], device=self.device))

    def again(self) -> Launch:
        assert self._next is not None, "decode first"
        return self._run(self._next)

    def _run(self, inputs: torch.Tensor) -> Launch:
        logits = self.model.decode(inputs[0], inputs[1], inputs[2])
        self._next = inputs.clone()
        return Launch(logits, advance(self._next, logits))


class GraphSteps(EagerSteps):
    """One CUDA graph per batch size: for one row the fused step (if it passed its check), else
    the plain step; each graph also advances its own inputs (`advance`). Rows beyond a batch's
    streams are padding: position -1, which the plain step's kernels skip (its PyTorch twin
    writes them to the last position of slot 0, a position no reply reaches: a reply ends one
    token before the context's end). The fused one-row graph never gets a padding row."""

    def __init__(self, model: GlmModel, sizes: list[int], fused: Any) -> None:
        from gputui.models.common.decode_graph import capture

        super().__init__(model)
        dev = self.device
        self.fused = fused is not None
        sizes = sorted({1, *sizes})
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.host = torch.zeros(3, sizes[-1], dtype=torch.long).pin_memory()
        self.padding = torch.tensor([[0], [0], [-1]]).expand(3, sizes[-1])  # token 0, slot 0, position -1
        # two pinned slots for the tokens, alternating: step k's are read while step k+1 runs
        self.token_slots = [torch.zeros(sizes[-1], dtype=torch.long).pin_memory() for _ in range(2)]
        self.events = [torch.cuda.Event() for _ in range(2)]
        self._turn = 0
        pool = None
        for b in sorted(sizes, reverse=True):  # the largest first: the others fit in its pool
            inputs = torch.zeros(3, b, dtype=torch.long, device=dev)
            if b == 1 and fused is not None:
                fused.slot = inputs[1]  # the fused step reads its stream's slot from the graph's inputs

                def body(x: torch.Tensor = inputs) -> tuple[torch.Tensor, torch.Tensor]:
                    logits = fused(x[0].view(1, 1), x[2]).view(1, -1)
                    return logits, advance(x, logits)
            else:
                def body(x: torch.Tensor = inputs) -> tuple[torch.Tensor, torch.Tensor]:
                    logits = model.decode(x[0], x[1], x[2])
                    return logits, advance(x, logits)
            graph, (logits, tokens) = capture(body, dev, pool)
            pool = graph.pool()
            self.graphs[b] = (graph, inputs, logits, tokens)
        self.sizes = sorted(self.graphs)
        self.use = self._fastest_fits()
        self._last = 1

    def _fastest_fits(self) -> dict[int, int]:
        """For each number of rows, the graph to run: the quickest of those that fit. cuBLAS
        picks its kernels by shape, and a larger batch is not always slower (on the H200: 4.15 ms
        a step at 8 rows, 3.97 at 16), so each graph's replay is timed once, here. One row keeps
        its own graph when it is the fused one."""
        ms = {}
        for b, (graph, inputs, _, _) in self.graphs.items():
            # every row at slot 0, position 0: real places (the fused one-row step has no padding
            # rows; it would write before the cache), and nothing to keep at warm-up
            inputs.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(5):
                inputs[2].zero_()  # each replay moves its rows one position on
                graph.replay()
            end.record()
            end.synchronize()
            ms[b] = start.elapsed_time(end)
        use = {m: min((b for b in self.sizes if b >= m), key=lambda b: (ms[b], b)) for m in range(1, self.sizes[-1] + 1)}
        if self.fused:
            use[1] = 1
        return use

    def decode(self, ids: list[int], slots: list[int], pos: list[int]) -> Launch:
        m = len(ids)
        b = self.use.get(m)
        if b is None:
            raise ValueError(f"{m} rows, over the largest batch graph ({self.sizes[-1]})")
        _, inputs, _, _ = self.graphs[b]
        host = self.host[:, :b]
        host[:, :m] = torch.tensor((ids, slots, pos))
        if m < b:
            host[:, m:] = self.padding[:, : b - m]
        inputs.copy_(host, non_blocking=True)
        self._last, self._rows = b, m
        return self._replay()

    def again(self) -> Launch:
        return self._replay()

    def _replay(self) -> Launch:
        graph, _, logits, tokens = self.graphs[self._last]
        graph.replay()
        # to the host outside the graph: a plain async copy queued behind the replay
        k, self._turn = self._turn, 1 - self._turn
        host = self.token_slots[k][: self._rows]
        host.copy_(tokens[: self._rows], non_blocking=True)
        self.events[k].record()
        return Launch(logits[: self._rows], host, self.events[k])


def triton_parts(shape: GlmShape, inv_freq: torch.Tensor, device: torch.device, rows: int) -> tuple[Any, Any]:
    """The decode attention of up to `rows` rows and the work between the step's matmuls as
    Triton kernels (positions read on the GPU, so the step can be a CUDA graph), or (None, None):
    their PyTorch twins (the CPU, no Triton, GPUTUI_FUSED_DECODE=0)."""
    from gputui.models.glm.glm_decode import fused_decode_enabled, triton_available

    if device.type != "cuda" or not triton_available() or not fused_decode_enabled():
        return None, None
    return kernel_parts(shape, inv_freq, device, rows)


def kernel_parts(shape: GlmShape, inv_freq: torch.Tensor, device: torch.device, rows: int) -> tuple[Any, Any]:
    """triton_parts' kernels on any device, unchecked (the tests run them in Triton's
    interpreter on the CPU)."""
    from gputui.models.glm.glm_triton import DecodeAttention, TritonRowOps

    att = DecodeAttention(shape.hq, shape.hkv, shape.head_dim, device, rows=rows)
    scale = shape.head_dim ** -0.5

    def attend(q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, slots: torch.Tensor,
               pos: torch.Tensor) -> torch.Tensor:
        out = torch.empty(q.shape[0], shape.hq * shape.head_dim, dtype=q.dtype, device=q.device)
        att(q, kc, vc, pos, scale, out, slots)
        return out

    return attend, TritonRowOps(shape, inv_freq)
