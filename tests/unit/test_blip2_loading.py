"""BLIP2's weights through our loader, handed to transformers as its state dict: the same
model as transformers' own loading, with no copy of any weight."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gputui.models.blip2.runtime import load_blip2_model


def test_our_loader_gives_transformers_model_and_shares_its_buffers(tiny_blip2_path: Path) -> None:
    ours: dict = {}
    fast = load_blip2_model(tiny_blip2_path, torch.device("cpu"), torch.float32, fast=True, timings=ours)
    theirs: dict = {}
    ref = load_blip2_model(tiny_blip2_path, torch.device("cpu"), torch.float32, fast=False, timings=theirs)
    assert ours["loader"] == "gputui" and theirs["loader"] == "transformers" and ours["read_s"] > 0
    assert ours["copied_params"] == 0
    a, b = fast.state_dict(), ref.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert fast.generation_config.to_dict() == ref.generation_config.to_dict()
    # every parameter is a view of the loader's one buffer for the checkpoint's one shard
    assert len({p.untyped_storage().data_ptr() for p in fast.parameters()}) == 1


def test_a_dtype_change_goes_through_transformers(tiny_blip2_path: Path) -> None:
    """The tiny checkpoint is float32: asked for bfloat16, a cast is needed, so our loader
    steps aside (the read buffers and the cast copies together would exceed the estimate)."""
    timings: dict = {}
    model = load_blip2_model(tiny_blip2_path, torch.device("cpu"), torch.bfloat16, fast=True, timings=timings)
    assert timings["loader"] == "transformers"
    assert next(model.parameters()).dtype == torch.bfloat16


def test_transformers_allocator_warm_up_is_off_for_our_weights(tiny_blip2_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """It would reserve the model's size again on the GPU (measured: 15 GiB held for a 7 GiB
    BLIP2); with the weights already there it only doubles the memory of a load."""
    import transformers.modeling_utils as mu

    calls: list[object] = []
    original = mu.caching_allocator_warmup
    monkeypatch.setattr(mu, "caching_allocator_warmup", lambda *a, **k: calls.append(a) or original(*a, **k))
    load_blip2_model(tiny_blip2_path, torch.device("cpu"), torch.float32, fast=True)
    assert calls == [] and mu.caching_allocator_warmup is not original  # restored to the recorder
    load_blip2_model(tiny_blip2_path, torch.device("cpu"), torch.float32, fast=False)
    assert len(calls) == 1  # transformers' own loading keeps it
