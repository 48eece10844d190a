"""The pinned-ring loader's chunking, run on the CPU with chunks far smaller than a tensor:
every tensor comes out exactly as safetensors itself reads it, as a view of its shard buffer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gputui.core.checkpoint_info import weight_files
from gputui.models.common import fast_load


@pytest.mark.parametrize("chunk,ring,threads", [(4096, 3, 4), (1000, 2, 8), (1 << 20, 16, 16)])
def test_chunked_reads_give_every_tensor_exactly(tiny_chatglm3_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 chunk: int, ring: int, threads: int) -> None:
    monkeypatch.setattr(fast_load, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(fast_load, "RING", ring)
    monkeypatch.setattr(fast_load, "THREADS", threads)
    files = weight_files(tiny_chatglm3_path)[1]
    assert len(files) > 1
    want: dict[str, torch.Tensor] = {}
    for f in files:
        want.update(load_file(str(f)))
    got = dict(fast_load.read_tensors(files, torch.device("cpu")))
    assert set(got) == set(want)
    for name, t in want.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
    # tensors of one shard share one buffer (no per-tensor copies)
    storages = {got[n].untyped_storage().data_ptr() for n in load_file(str(files[0]))}
    assert len(storages) == 1


def test_a_ring_pinned_ahead_is_used_once_and_a_failed_one_is_made_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import Future

    monkeypatch.setattr(fast_load, "CHUNK_BYTES", 64)
    monkeypatch.setattr(fast_load, "RING", 3)
    made = [torch.empty(64, dtype=torch.uint8) for _ in range(3)]
    ready: Future[list[torch.Tensor]] = Future()
    ready.set_result(made)
    monkeypatch.setattr(fast_load, "_ahead", ready)
    assert fast_load.pinned_ring(pinned=True) is made
    assert fast_load._ahead is None  # used once: the next load pins its own
    failed: Future[list[torch.Tensor]] = Future()
    failed.set_exception(RuntimeError("no CUDA here"))
    monkeypatch.setattr(fast_load, "_ahead", failed)
    ring = fast_load.pinned_ring(pinned=False)  # unpinned: a CPU load never waits for the ring ahead
    assert fast_load._ahead is failed and len(ring) == 3
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: t)  # this machine has no CUDA to pin with
    ring = fast_load.pinned_ring(pinned=True)
    assert fast_load._ahead is None and len(ring) == 3 and all(t.numel() == 64 for t in ring)
