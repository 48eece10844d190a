"""Splitting one model's layers over the GPUs a user listed: a small pure planner.

A model is split only when the user names several GPUs (never by `auto`). Each GPU gets one
contiguous run of decoder layers, in the order the GPUs were listed; the first also holds the
embedding, the last the final norm and the output head, and every one of them pays for its own
CUDA context, cuBLAS workspace and a prefill's activations. Layers go out in proportion to
each GPU's room after those fixed costs, so the GPUs fill to about the same fraction (as
Ollama spreads layers), and a plan that does not fit is refused with one line that names the
GPU that is short.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gputui.core.units import human_bytes


class SplitRefused(ValueError):
    """Why the layers cannot be spread over these GPUs; str() is one line."""


@dataclass(frozen=True)
class SplitCosts:
    """Bytes of one model, by where they must live. Per layer: its weights and its KV cache."""

    layer_bytes: tuple[int, ...]
    first_bytes: int  # the embedding: with the first layers
    last_bytes: int  # final norm and output head: with the last layers
    per_gpu_bytes: int  # context + cuBLAS workspace + activations + slack, on every GPU

    def need(self, index: int, count: int, layers: range) -> int:
        """What GPU `index` of `count` needs when it holds `layers`."""
        n = self.per_gpu_bytes + sum(self.layer_bytes[i] for i in layers)
        if index == 0:
            n += self.first_bytes
        if index == count - 1:
            n += self.last_bytes
        return n

    @property
    def total_bytes(self) -> int:
        return self.per_gpu_bytes + self.first_bytes + self.last_bytes + sum(self.layer_bytes)


def split_layers(costs: SplitCosts, usable: Sequence[int], labels: Sequence[str]) -> list[range]:
    """Contiguous layer ranges, one per GPU, each non-empty; or SplitRefused.

    `usable[i]` is GPU i's free memory after the reserve and margin; `labels[i]` names it.
    """
    count = len(usable)
    n_layers = len(costs.layer_bytes)
    if count < 2:
        raise SplitRefused("a split needs at least two GPUs")
    if n_layers < count:
        raise SplitRefused(f"the model has {n_layers} layers, fewer than the {count} GPUs listed")
    room = [usable[i] - costs.need(i, count, range(0)) for i in range(count)]
    for i, r in enumerate(room):
        if r < min(costs.layer_bytes):
            raise SplitRefused(
                f"{labels[i]} has room for no layer: {human_bytes(max(usable[i], 0))} usable, "
                f"{human_bytes(costs.need(i, count, range(0)))} goes to its own fixed costs")
    total_layers = sum(costs.layer_bytes)
    if total_layers > sum(room):
        need_all = sum(costs.need(i, count, range(0)) for i in range(count)) + total_layers
        raise SplitRefused(
            f"split over {' + '.join(labels)}: needs {human_bytes(need_all)} in all, "
            f"{human_bytes(sum(max(u, 0) for u in usable))} usable")
    ranges: list[range] = []
    start = 0
    placed = 0
    for i in range(count):
        left_gpus = count - i - 1
        if left_gpus == 0:
            stop = n_layers
        else:
            # Aim at this GPU's share of the layers by room; never take so many that the GPUs
            # after it cannot hold the rest, nor so few that they must take more than fits.
            target = total_layers * sum(room[: i + 1]) / sum(room)
            stop = start + 1
            while stop < n_layers - left_gpus and placed + _bytes(costs, start, stop + 1) <= target + \
                    costs.layer_bytes[stop] / 2 and _bytes(costs, start, stop + 1) <= room[i]:
                stop += 1
            while _bytes(costs, stop, n_layers) > sum(room[i + 1:]) and stop < n_layers - left_gpus \
                    and _bytes(costs, start, stop + 1) <= room[i]:
                stop += 1
        layers = range(start, stop)
        if _bytes(costs, start, stop) > room[i]:
            raise SplitRefused(
                f"{labels[i]}: its share of the layers ({len(layers)}, "
                f"{human_bytes(costs.need(i, count, layers))}) does not fit its "
                f"{human_bytes(max(usable[i], 0))} usable")
        ranges.append(layers)
        placed += _bytes(costs, start, stop)
        start = stop
    return ranges


def _bytes(costs: SplitCosts, start: int, stop: int) -> int:
    return sum(costs.layer_bytes[start:stop])
