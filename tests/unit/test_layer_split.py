"""The worker side of a split model: which device each tensor is read to, and the hooks that
carry a layer's inputs across a device boundary.

The CPU has one device, so tensors meant for "the other GPU" go to the meta device here: a
wrong move shows as a meta tensor where data was expected (or the reverse).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gputui.core.checkpoint_info import read_safetensors_header, weight_files
from gputui.core.kinds import kind_named
from gputui.models.common import fast_load
from gputui.models.common.layer_split import attach_device_hooks, layer_devices, move
from gputui.models.glm.chatglm3 import load_chatglm3

CPU, META = torch.device("cpu"), torch.device("meta")


def test_layer_ranges_become_one_device_per_layer() -> None:
    a, b = torch.device("cuda:0"), torch.device("cuda:1")
    assert layer_devices([[0, 2], [2, 3]], [a, b], 3) == [a, a, b]
    with pytest.raises(ValueError, match="do not tile"):
        layer_devices([[0, 2], [1, 3]], [a, b], 3)
    with pytest.raises(ValueError, match="cover 2 layers, the model has 3"):
        layer_devices([[0, 1], [1, 2]], [a, b], 3)
    with pytest.raises(ValueError, match="2 layer ranges for 1 devices"):
        layer_devices([[0, 1], [1, 2]], [a], 2)


def test_move_reaches_tensors_inside_tuples_lists_and_dicts() -> None:
    t = torch.ones(2)
    cache = object()  # a KV cache object passes through untouched
    out = move(((t, t), [t], {"mask": t, "cache": cache}, 3), META)
    assert out[0][0].device == META and out[0][1].device == META and out[1][0].device == META
    assert out[2]["mask"].device == META and out[2]["cache"] is cache and out[3] == 3


class Probe(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.device] = []

    def forward(self, hidden: torch.Tensor, *, position_embeddings: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        self.seen += [hidden.device, *(p.device for p in position_embeddings)]
        return hidden


def test_every_layer_off_the_first_device_gets_all_its_inputs_on_its_own_device() -> None:
    """The model hands every layer the same rotary tables, from the first device; only the
    hidden states come from the layer before."""
    layers = [Probe() for _ in range(4)]
    assert attach_device_hooks(layers, [CPU, CPU, META, META]) == [2, 3]
    x, rope = torch.ones(3), (torch.ones(3), torch.ones(3))
    for layer in layers:
        x = layer(x, position_embeddings=rope)  # rope stays the model's own, on the CPU
    assert layers[0].seen == [CPU] * 3 and layers[1].seen == [CPU] * 3
    assert layers[2].seen == [META] * 3 and layers[3].seen == [META] * 3


def device_by_layer(name: str) -> torch.device:
    """Layer 1 and the head on "the other device"; the embedding and layer 0 here."""
    role = kind_named("chatglm3").tensor_role
    assert role is not None
    r = role(name)
    return CPU if r == "first" or r == 0 else META


def test_segments_split_each_shard_where_the_device_changes(tiny_chatglm3_path: Path) -> None:
    files = weight_files(tiny_chatglm3_path)[1]
    headers = [read_safetensors_header(f) for f in files]
    segments = fast_load.plan_segments(headers, device_by_layer)
    for seg in segments:  # every tensor in a segment goes to the segment's device
        inside = [t for t in headers[seg.file] if seg.begin <= t.begin < seg.end]
        assert inside and all(device_by_layer(t.name) == seg.device for t in inside)
    covered = sum(seg.end - seg.begin for seg in segments)
    assert covered == sum(t.nbytes for h in headers for t in h)  # every byte once
    assert {seg.device for seg in segments} == {CPU, META}


def test_each_tensor_is_read_to_its_own_device_and_cpu_ones_are_exact(
        tiny_chatglm3_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_load, "CHUNK_BYTES", 3000)  # chunks far smaller than a tensor
    files = weight_files(tiny_chatglm3_path)[1]
    want: dict[str, torch.Tensor] = {}
    for f in files:
        want.update(load_file(str(f)))
    got = dict(fast_load.read_tensors(files, device_by_layer))
    assert set(got) == set(want)
    for name, t in want.items():
        assert got[name].device == device_by_layer(name) and got[name].shape == t.shape, name
        if got[name].device == CPU:
            assert torch.equal(got[name], t), name


def test_a_model_loaded_over_two_ranges_answers_as_the_whole_one(tiny_chatglm3_path: Path) -> None:
    whole = load_chatglm3(tiny_chatglm3_path, "cpu", torch.float32)
    split = load_chatglm3(tiny_chatglm3_path, "cpu", torch.float32, layer_devices=[CPU, CPU])
    ids = torch.tensor([[5, 9, 33, 2]])
    with torch.inference_mode():
        assert torch.equal(whole(input_ids=ids).logits, split(input_ids=ids).logits)
    with pytest.raises(ValueError, match="3 layer devices for 2 layers"):
        load_chatglm3(tiny_chatglm3_path, "cpu", torch.float32, layer_devices=[CPU] * 3)


def test_the_head_and_later_layers_land_on_the_last_device(tiny_chatglm3_path: Path) -> None:
    """Placed on meta for "the second GPU": the weights that belong there are nowhere else."""
    m = load_chatglm3(tiny_chatglm3_path, "cpu", torch.float32, layer_devices=[CPU, META])
    assert m.model.embed_tokens.weight.device == CPU
    assert all(p.device == CPU for p in m.model.layers[0].parameters())
    assert all(p.device == META for p in m.model.layers[1].parameters())
    assert m.model.norm.weight.device == META and m.lm_head.weight.device == META
    assert m.model.rotary_emb.inv_freq.device == CPU


def test_a_three_layer_model_runs_with_two_layers_on_the_second_device(tmp_path: Path) -> None:
    """Meta stands for the second GPU: a forward that mixes devices anywhere raises, so this
    runs only if every layer there gets its hidden states, rotary tables and positions there."""
    from gputui.models.glm.chatglm3_runtime import ChatGLM3Runtime
    from gputui.models.tiny import build_chatglm3

    build_chatglm3(tmp_path, num_layers=3)
    rt = ChatGLM3Runtime.load({"path": str(tmp_path), "max_context": 64, "layer_split": [[0, 1], [1, 3]]},
                              [CPU, META], torch.float32)
    assert rt._prefill([5, 9, 33]).device == META
    assert [lay.keys.device for lay in rt.cache.layers] == [CPU, META, META]  # each layer's cache on its device
