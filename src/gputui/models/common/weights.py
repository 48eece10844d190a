"""Reading checkpoint tensors straight onto a device, one tensor at a time.

safetensors first (memory-mapped, so the host never holds a full copy of the model); a .bin
shard only through `torch.load(weights_only=True)`, which refuses pickled code.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from gputui.core.checkpoint_info import CheckpointError, read_safetensors_header, weight_files

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}") from None


def validate(path: Path) -> str:
    """Check every shard's header and size before anything is allocated; returns the format."""
    fmt, files = weight_files(path)
    if fmt == "safetensors":
        for f in files:
            read_safetensors_header(f)
    return fmt


def iter_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, CPU tensor) for every tensor of the checkpoint, shard by shard.

    safetensors tensors are views of the memory-mapped file: no copy until they move.
    """
    fmt, files = weight_files(path)
    for f in files:
        if fmt == "safetensors":
            with safe_open(str(f), framework="pt", device="cpu") as st:
                for name in st.keys():
                    yield name, st.get_tensor(name)
        else:
            try:
                state = torch.load(str(f), map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:  # UnpicklingError for payloads, RuntimeError for junk
                raise CheckpointError(
                    f"{f}: refused to load ({type(e).__name__}); .bin shards are read with "
                    "weights_only=True, which rejects pickled code"
                ) from None
            if not isinstance(state, dict):
                raise CheckpointError(f"{f}: expected a dict of tensors")
            yield from state.items()
            del state


def to_device(t: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Move one tensor to its place, casting floats to the model dtype; never aliases the file."""
    target = dtype if t.is_floating_point() else t.dtype
    if device.type == "cpu":
        return t.to(dtype=target, copy=True)
    return t.to(device=device, dtype=target, non_blocking=False)
