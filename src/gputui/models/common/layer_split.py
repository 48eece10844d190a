"""One decoder model over several devices: a contiguous run of layers on each.

The scheduler hands the worker one [start, stop) range of layers per GPU (core/split.py). The
embedding and the rotary table stay with the first range, the final norm and the output head
with the last. Every layer off the first device gets a forward pre-hook that moves its inputs
to its device: the hidden states come from the layer before, but the rotary cos/sin, mask and
positions come from the model itself, on the first device, for every layer (measured on the
H100: hooking only the first layer of a range failed at the second one's rotary). The KV
cache of a layer is made where its keys are, so it follows on its own. This is pipeline placement with
no overlap: one token still passes through the GPUs one after another, which is what batch-1
chat does anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch


def layer_devices(layer_split: Sequence[Sequence[int]], devices: Sequence[torch.device],
                  n_layers: int) -> list[torch.device]:
    """The device of every layer, from the ranges the scheduler planned; checks they tile 0..n."""
    if len(layer_split) != len(devices):
        raise ValueError(f"{len(layer_split)} layer ranges for {len(devices)} devices")
    out: list[torch.device] = []
    for (start, stop), dev in zip(layer_split, devices, strict=True):
        if start != len(out) or stop <= start:
            raise ValueError(f"layer ranges {list(map(list, layer_split))} do not tile 0..{n_layers}")
        out.extend([dev] * (stop - start))
    if len(out) != n_layers:
        raise ValueError(f"layer ranges {list(map(list, layer_split))} cover {len(out)} layers, the model has {n_layers}")
    return out


def move(x: Any, device: torch.device) -> Any:
    """Tensors, also inside tuples, lists and dicts, on `device`; anything else as it is."""
    if isinstance(x, torch.Tensor):
        # async into a GPU (stream-ordered); into host memory it must be done before it is read
        return x.to(device, non_blocking=device.type == "cuda")
    if isinstance(x, tuple):
        return tuple(move(v, device) for v in x)
    if isinstance(x, list):
        return [move(v, device) for v in x]
    if isinstance(x, dict):
        return {k: move(v, device) for k, v in x.items()}
    return x


def _inputs_to(device: torch.device, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
               ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return move(args, device), move(kwargs, device)


def attach_device_hooks(layers: Sequence[torch.nn.Module], devices: Sequence[torch.device]) -> list[int]:
    """Hook every layer that is not on the first device; returns their indices. (A moved
    tensor already on the target device is not copied: `.to` returns it as it is.)"""
    hooked = [i for i in range(len(devices)) if devices[i] != devices[0]]
    for i in hooked:
        layers[i].register_forward_pre_hook(partial(_inputs_to, devices[i]), with_kwargs=True)
    return hooked
