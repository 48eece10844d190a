"""ChatGLM3 loaded natively on GlmForCausalLM computes what ChatGLM3 computes.

The reference below is written from the published ChatGLM3 block (chatglm3-format.md), in
float64, reading the checkpoint's own tensors; the loader's mapped model must agree.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gputui.core.checkpoint_info import CheckpointError
from gputui.models.common.hf import cache_keyword
from gputui.models.glm.chatglm3 import ChatGLM3Tokenizer, load_chatglm3
from gputui.models.tiny import build_chatglm3


def read_all(path: Path) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        sd.update(load_file(str(f)))
    return {k: v.double() for k, v in sd.items()}


def reference_logits(path: Path, ids: list[int]) -> torch.Tensor:
    """ChatGLM3's forward, from the format facts, in float64."""
    cfg = json.loads((path / "config.json").read_text())
    w = read_all(path)
    heads, d, kv = cfg["num_attention_heads"], cfg["kv_channels"], cfg["multi_query_group_num"]
    eps = cfg["layernorm_epsilon"]
    base = 10000.0 * cfg.get("rope_ratio", 1.0)
    n = len(ids)

    def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    # RotaryEmbedding(kv_channels // 2): rotates the first half of each head, in pairs.
    rot = d // 2
    inv = 1.0 / (base ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
    ang = torch.outer(torch.arange(n, dtype=torch.float64), inv)  # [n, rot/2]
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]

    def rope(x: torch.Tensor) -> torch.Tensor:  # x: [n, heads, d]
        xr, xp = x[..., :rot], x[..., rot:]
        pairs = xr.reshape(n, x.shape[1], rot // 2, 2)
        a, b = pairs[..., 0], pairs[..., 1]
        out = torch.stack([a * cos - b * sin, b * cos + a * sin], -1).flatten(2)
        return torch.cat([out, xp], -1)

    x = w["transformer.embedding.word_embeddings.weight"][ids]
    mask = torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1)
    for i in range(cfg["num_layers"]):
        p = f"transformer.encoder.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        qkv = h @ w[p + "self_attention.query_key_value.weight"].T + w[p + "self_attention.query_key_value.bias"]
        q, k, v = torch.split(qkv, [heads * d, kv * d, kv * d], -1)
        q, k, v = q.view(n, heads, d), k.view(n, kv, d), v.view(n, kv, d)
        q, k = rope(q), rope(k)
        k = k.repeat_interleave(heads // kv, 1)
        v = v.repeat_interleave(heads // kv, 1)
        att = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(d) + mask
        ctx = torch.einsum("hqk,khd->qhd", att.softmax(-1), v).reshape(n, heads * d)
        x = x + ctx @ w[p + "self_attention.dense.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        a, b = (h @ w[p + "mlp.dense_h_to_4h.weight"].T).chunk(2, -1)
        x = x + (torch.nn.functional.silu(a) * b) @ w[p + "mlp.dense_4h_to_h.weight"].T
    x = rms(x, w["transformer.encoder.final_layernorm.weight"])
    return x @ w["transformer.output_layer.weight"].T


def mapped_logits(path: Path, ids: list[int]) -> torch.Tensor:
    model = load_chatglm3(path, device="cpu", dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_mapped_glm_matches_the_reference_chatglm3_forward(tiny_chatglm3_path: Path) -> None:
    tok = ChatGLM3Tokenizer(tiny_chatglm3_path)
    ids = tok.chat_ids([{"role": "user", "content": "hello world, 你好"}])
    ref = reference_logits(tiny_chatglm3_path, ids)
    assert rel_err(mapped_logits(tiny_chatglm3_path, ids), ref) < 1e-5


def test_rope_ratio_is_honoured(tmp_path: Path) -> None:
    """32k/128k variants scale rope_theta by rope_ratio; ignoring it changes the logits."""
    build_chatglm3(tmp_path, seed=3, rope_ratio=50.0)
    ids = list(range(5, 45))
    ref = reference_logits(tmp_path, ids)
    assert rel_err(mapped_logits(tmp_path, ids), ref) < 1e-5
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("rope_ratio")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert rel_err(mapped_logits(tmp_path, ids), ref) > 1e-3


def test_weights_stay_on_one_device_and_dtype(tiny_chatglm3_path: Path) -> None:
    model = load_chatglm3(tiny_chatglm3_path, device="cpu", dtype="bfloat16")
    dtypes = {p.dtype for p in model.parameters()}
    assert dtypes == {torch.bfloat16}
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert model.model.rotary_emb.inv_freq.device.type == "cpu"


def test_greedy_generation_stops_at_a_stop_id(tiny_chatglm3_path: Path) -> None:
    tok = ChatGLM3Tokenizer(tiny_chatglm3_path)
    model = load_chatglm3(tiny_chatglm3_path)
    user = tok.special["<|user|>"]
    # Make <|user|> the most likely next token everywhere: generation must stop after it.
    with torch.no_grad():
        hidden = model.model.norm(model.model.embed_tokens.weight).mean(0)
        model.lm_head.weight[user] = hidden * 1000
    ids = torch.tensor([tok.chat_ids([{"role": "user", "content": "hi"}])])
    out = model.generate(ids, max_new_tokens=20, do_sample=False)
    new = out[0, ids.shape[1]:].tolist()
    assert new[-1] == user and len(new) < 20


def test_a_blip2_folder_is_named_as_such(tiny_blip2_path: Path) -> None:
    with pytest.raises(CheckpointError, match="a blip2 checkpoint, not chatglm3"):
        load_chatglm3(tiny_blip2_path)


@pytest.mark.parametrize("damage", ["truncate", "bad_header", "missing_shard", "wrong_shape"])
def test_a_broken_checkpoint_is_rejected_with_its_file_named(tiny_chatglm3_path: Path, tmp_path: Path, damage: str) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_chatglm3_path, broken)
    shard = broken / "model-00001-of-00002.safetensors"
    if damage == "truncate":
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) - 100])
    elif damage == "bad_header":
        shard.write_bytes(b"\xff" * 64)
    elif damage == "missing_shard":
        (broken / "model-00002-of-00002.safetensors").unlink()
    else:
        cfg = json.loads((broken / "config.json").read_text())
        cfg["ffn_hidden_size"] += 8
        (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        load_chatglm3(broken)
    assert "\n" not in str(e.value)
    if damage != "wrong_shape":
        assert "model-0000" in str(e.value)


def test_grouped_decode_attention_matches_the_stock_path(tiny_chatglm3_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-place GQA decode step gives the same logits as transformers' own SDPA path."""
    from transformers import StaticCache

    from gputui.models.common import gqa_attention
    from gputui.models.common.gqa_attention import use_gqa_attention

    grouped_calls = []
    real_softmax = gqa_attention.torch.softmax

    def counting(x, dim):  # type: ignore[no-untyped-def]
        grouped_calls.append(tuple(x.shape))
        return real_softmax(x, dim=dim)

    monkeypatch.setattr(gqa_attention.torch, "softmax", counting)

    def run(patched: bool) -> torch.Tensor:
        model = load_chatglm3(tiny_chatglm3_path)
        if patched:
            use_gqa_attention(model)
        cache = StaticCache(config=model.config, max_cache_len=64)
        kw = cache_keyword(model)  # the name transformers uses now (past_key_values is going)
        ids = torch.tensor([[5, 9, 30, 41, 7]])
        with torch.no_grad():
            model(input_ids=ids, **{kw: cache}, cache_position=torch.arange(5), use_cache=True)
            steps = [model(input_ids=torch.tensor([[t]]), **{kw: cache},
                           cache_position=torch.tensor([5 + i]), use_cache=True).logits[0, -1]
                     for i, t in enumerate([11, 12, 13])]
        return torch.stack(steps)

    stock = run(False)
    grouped_calls.clear()
    grouped = run(True)
    assert rel_err(grouped.double(), stock.double()) < 1e-5
    assert (1, 2, 2, 64) in grouped_calls  # the grouped path ran: 2 KV heads x 2 queries each, 64 cache slots
