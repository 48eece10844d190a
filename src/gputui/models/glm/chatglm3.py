"""ChatGLM3 on transformers' own GlmForCausalLM, without trust_remote_code.

Public API (see README):
    from gputui.models.glm.chatglm3 import load_chatglm3, ChatGLM3Tokenizer
    model = load_chatglm3(path, device="cpu", dtype=torch.float32)

The config and weights are mapped as transformers' GLM conversion script does, with one fix:
rope_ratio (the 32k/128k variants) scales rope_theta, which that script ignores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GlmConfig, GlmForCausalLM

from gputui.core import env
from gputui.core.checkpoint_info import CheckpointError, weight_files
from gputui.core.kinds import check_kind, kind_named
from gputui.models.common.weights import iter_tensors, to_device, torch_dtype, validate
from gputui.models.glm.chatglm3_tokenizer import ChatGLM3Tokenizer

__all__ = ["load_chatglm3", "ChatGLM3Tokenizer", "glm_config_from_chatglm", "map_weight"]


def glm_config_from_chatglm(cfg: dict[str, Any]) -> GlmConfig:
    """ChatGLM3's config.json -> GlmConfig (fields as in chatglm3-format.md)."""
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("kv_channels", cfg["hidden_size"] // heads)
    kv_heads = cfg.get("multi_query_group_num", heads) if cfg.get("multi_query_attention") else heads
    theta = 10000.0 * float(cfg.get("rope_ratio", 1.0))
    eos = cfg.get("eos_token_id", 2)
    # partial_rotary_factor is also given on its own for transformers versions that read it from
    # the config rather than from rope_parameters; the typed signature does not list it.
    return GlmConfig(  # type: ignore[call-arg]
        vocab_size=cfg["padded_vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["ffn_hidden_size"],
        num_hidden_layers=cfg["num_layers"],
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=cfg.get("seq_length", 8192),
        rms_norm_eps=cfg.get("layernorm_epsilon", 1e-5),
        attention_bias=bool(cfg.get("add_qkv_bias", True)),
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": theta, "partial_rotary_factor": 0.5},
        partial_rotary_factor=0.5,
        pad_token_id=cfg.get("pad_token_id", 0),
        eos_token_id=eos,
        bos_token_id=None,
        hidden_act="silu",
    )


def map_weight(name: str, t: torch.Tensor, g: GlmConfig) -> list[tuple[str, torch.Tensor]]:
    """One ChatGLM3 tensor -> the GlmForCausalLM tensor(s) it becomes ([] to drop it)."""
    if name.endswith("rotary_pos_emb.inv_freq"):
        return []  # recomputed from the config
    if name == "transformer.output_layer.weight":
        return [("lm_head.weight", t)]
    if name == "transformer.embedding.word_embeddings.weight":
        return [("model.embed_tokens.weight", t)]
    if name == "transformer.encoder.final_layernorm.weight":
        return [("model.norm.weight", t)]
    prefix = "transformer.encoder.layers."
    if not name.startswith(prefix):
        raise CheckpointError(f"unexpected tensor {name!r} in a ChatGLM3 checkpoint")
    layer, _, rest = name[len(prefix):].partition(".")
    base = f"model.layers.{layer}."
    if rest.startswith("self_attention.query_key_value."):
        kind = rest.rsplit(".", 1)[1]  # weight or bias
        head_dim = int(g.head_dim or g.hidden_size // g.num_attention_heads)
        q = int(g.num_attention_heads) * head_dim
        kv = int(g.num_key_value_heads or g.num_attention_heads) * head_dim
        if t.shape[0] != q + 2 * kv:
            raise CheckpointError(f"{name}: {t.shape[0]} rows, expected {q + 2 * kv} for the config")
        qt, kt, vt = torch.split(t, [q, kv, kv], dim=0)
        return [(base + f"self_attn.{p}_proj.{kind}", x) for p, x in zip("qkv", (qt, kt, vt), strict=True)]
    renames = {
        "self_attention.dense.weight": "self_attn.o_proj.weight",
        "mlp.dense_h_to_4h.weight": "mlp.gate_up_proj.weight",
        "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
        "input_layernorm.weight": "input_layernorm.weight",
        "post_attention_layernorm.weight": "post_attention_layernorm.weight",
    }
    if rest not in renames:
        raise CheckpointError(f"unexpected tensor {name!r} in a ChatGLM3 checkpoint")
    return [(base + renames[rest], t)]


def _set_tensor(model: nn.Module, name: str, value: torch.Tensor) -> None:
    mod_name, _, attr = name.rpartition(".")
    mod = model.get_submodule(mod_name)
    old = getattr(mod, attr)
    if tuple(old.shape) != tuple(value.shape):
        raise CheckpointError(f"{name}: shape {list(value.shape)} in the checkpoint, config says {list(old.shape)}")
    mod._parameters[attr] = nn.Parameter(value, requires_grad=False)


def load_chatglm3(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32,
    timings: dict[str, float] | None = None, layer_devices: Sequence[torch.device] | None = None,
) -> GlmForCausalLM:
    """Load a published ChatGLM3 checkpoint folder as a transformers GlmForCausalLM.

    The model is built on the meta device (no memory), then each tensor is read from the
    memory-mapped file, cast and placed on `device` one at a time, so host memory never holds
    the whole model. Broken checkpoints are rejected before the first tensor moves.
    `layer_devices` (one per decoder layer) splits the model: see models/common/layer_split.py.
    """
    p = Path(path)
    cfg = check_kind(kind_named("chatglm3"), p)  # the same checks as the scheduler's preflight
    dev = torch.device(device)
    dt = torch_dtype(dtype) if isinstance(dtype, str) else dtype
    g = glm_config_from_chatglm(cfg)
    with torch.device("meta"):
        model = GlmForCausalLM(g)
    fmt = validate(p)
    per_layer = list(layer_devices) if layer_devices is not None else [dev] * g.num_hidden_layers
    if len(per_layer) != g.num_hidden_layers:
        raise ValueError(f"{len(per_layer)} layer devices for {g.num_hidden_layers} layers")
    dev = per_layer[0]
    role = kind_named("chatglm3").tensor_role
    assert role is not None

    def device_of(name: str) -> torch.device:
        r = role(name)
        return per_layer[0] if r == "first" else per_layer[-1] if r == "last" else per_layer[int(r)]

    # GPUTUI_FAST_LOAD=0 selects the plain per-tensor path (kept for comparison in bench/)
    on_gpu = any(d.type == "cuda" for d in per_layer)
    if on_gpu and fmt == "safetensors" and env.switched_on("GPUTUI_FAST_LOAD"):
        from gputui.models.common.fast_load import read_tensors

        tensors: Any = read_tensors(weight_files(p)[1], device_of, timings)  # views; all copies done
    else:
        tensors = iter_tensors(p)
    placed: set[str] = set()
    for name, t in tensors:
        # Place (and cast) each checkpoint tensor whole, then split: q, k and v stay row views
        # of one block, which the fused decode step multiplies in one go.
        for new_name, part in map_weight(name, to_device(t, device_of(name), dt), g):
            _set_tensor(model, new_name, part)
            placed.add(new_name)
    missing = [n for n, _ in model.named_parameters() if n not in placed]
    if missing:
        raise CheckpointError(f"{p}: missing weights {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    # Non-persistent buffers (the RoPE frequencies) were made on meta: build them for real.
    rotary_cls = type(model.model.rotary_emb)
    model.model.rotary_emb = rotary_cls(g).to(dev)
    if len(set(per_layer)) > 1:
        from gputui.models.common.layer_split import attach_device_hooks

        attach_device_hooks(model.model.layers, per_layer)
    model.eval()
    if (p / "tokenizer.model").is_file():  # stop at eos, <|user|> and <|observation|>
        model.generation_config.eos_token_id = list(ChatGLM3Tokenizer(p).stop_ids)
    model.generation_config.pad_token_id = g.pad_token_id
    return model
