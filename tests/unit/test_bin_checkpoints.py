"""`.bin` shards: read only with torch.load(weights_only=True); a pickle payload never runs."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gputui.core.checkpoint_info import CheckpointError
from gputui.models.glm.chatglm3 import load_chatglm3


def as_bin_checkpoint(src: Path, dst: Path) -> None:
    """The same tiny model, published the old way: pytorch_model-0000N-of-0000M.bin + index."""
    dst.mkdir()
    for name in ("config.json", "tokenizer.model"):
        shutil.copy(src / name, dst / name)
    weight_map = {}
    shards = sorted(src.glob("*.safetensors"))
    for i, f in enumerate(shards):
        fname = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        sd = load_file(str(f))
        torch.save(sd, dst / fname)
        weight_map.update({k: fname for k in sd})
    (dst / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_a_bin_checkpoint_loads_to_the_same_model(tiny_chatglm3_path: Path, tmp_path: Path) -> None:
    as_bin_checkpoint(tiny_chatglm3_path, tmp_path / "bin")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        a = load_chatglm3(tiny_chatglm3_path)(ids).logits
        b = load_chatglm3(tmp_path / "bin")(ids).logits
    assert torch.equal(a, b)


class Payload:
    """Unpickling this would run `open(marker, 'w')`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def test_a_pickle_payload_in_a_bin_shard_never_runs(tiny_chatglm3_path: Path, tmp_path: Path) -> None:
    evil = tmp_path / "evil"
    as_bin_checkpoint(tiny_chatglm3_path, evil)
    marker = tmp_path / "PWNED"
    shard = sorted(evil.glob("*.bin"))[0]
    with open(shard, "wb") as f:
        pickle.dump({"transformer.embedding.word_embeddings.weight": Payload(str(marker))}, f)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_chatglm3(evil)
    assert not marker.exists()
