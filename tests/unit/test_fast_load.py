"""The pinned-ring loader's chunking, run on the CPU with chunks far smaller than a tensor:
every tensor comes out exactly as safetensors itself reads it, as a view of its shard buffer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gputui.core.checkpoint_info import weight_files
from gputui.models import fast_load


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
    got = dict(fast_load.iter_device_tensors(files, torch.device("cpu")))
    assert set(got) == set(want)
    for name, t in want.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
    # tensors of one shard share one buffer (no per-tensor copies)
    storages = {got[n].untyped_storage().data_ptr() for n in load_file(str(files[0]))}
    assert len(storages) == 1
