"""The registry of model kinds: how to recognise, size and run each one.

A kind names its runtime by import path (resolved only inside a worker process, where torch
lives), so the dashboard and the scheduler can use the estimator without importing torch.
Adding a kind = one runtime (gputui.models.common.runtime.Runtime) and one ModelKind: an entry in KINDS,
or, from another package, an entry point in the group `gputui.kinds` naming its ModelKind
(`echo = mypkg.kinds:ECHO`) - read on the first question about kinds, in every process (workers
too), never at import time; a plugin that fails to load is left out and `gputui doctor` says why.
Nothing outside this registry and the kind's runtime may branch on a kind's name: code asks its
capabilities.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gputui.core.checkpoint_info import (
    TARGET_BYTES,
    CheckpointError,
    device_bytes,
    open_regular,
    read_config,
    regular_file,
    tensor_infos,
    weight_bytes,
)
from gputui.core.config_schema import Field, check_config, count, optional
from gputui.core.estimate import (
    Estimate,
    decoder_activation_bytes,
    kv_cache_bytes,
)
from gputui.core.placement import named_gpus
from gputui.core.split import SplitCosts

# Prefill is done in chunks of at most this many tokens, which bounds activation memory.
PREFILL_CHUNK = 2048


@dataclass(frozen=True)
class ModelKind:
    name: str
    model_types: tuple[str, ...]  # config.json model_type values this kind reads
    runtime: str  # "module:Class" of the worker-side runtime
    estimate_extra: Callable[[dict[str, Any], int, int], tuple[int, int]]  # (kv, activations)
    default_context: int
    description: str
    # checkpoint tensor name -> its decoder layer, or "first" / "last" (what goes with the
    # first / last layers); None: this kind runs on one GPU only
    tensor_role: Callable[[str], int | str] | None = None
    fast_load: bool = False  # its runtime reads weights through models/common/fast_load.py
    batches: bool = False  # answers up to max_batch requests at once, a KV-cache slot each
    # checks of the config beyond its fields' types (raise CheckpointError with one line)
    config_check: Callable[[dict[str, Any], Path], None] | None = None
    config_fields: tuple[Field, ...] = ()  # what its code reads from config.json, with types and ranges
    # -- what a chat with it is (the TUI and chat code ask these, never the kind's name) --
    takes_images: bool = False  # a request is an image and a question, not a conversation
    describes_images: bool = False  # can describe an image for another model's conversation
    settings: tuple[str, ...] = ("max_new_tokens", "temperature", "top_p")  # generation settings it uses
    input_hint: str = "message · /system TEXT · /set temperature=0.7"
    # files besides config and weights that must be there, and how the first bytes must look
    # (a garbage tokenizer is refused at preflight, not after a CUDA context and cuBLAS warm-up)
    needs_files: tuple[tuple[str, bytes], ...] = ()


CHATGLM3_CONFIG = (
    count("num_layers", 4096), count("hidden_size", 1 << 17), count("ffn_hidden_size", 1 << 20),
    count("num_attention_heads", 4096), count("padded_vocab_size", 1 << 22),
    optional("multi_query_group_num", 4096), optional("kv_channels", 1 << 14),
    Field("multi_query_attention", "flag", required=False), optional("seq_length", 1 << 22, lo=16),
    Field("rope_ratio", "number", required=False),
)
# the SentencePiece model is a protobuf ModelProto: its first field (pieces, 1, length-delimited)
# starts with the byte 0x0a
SENTENCEPIECE_MAGIC = b"\x0a"

BLIP2_CONFIG = (
    optional("num_query_tokens", 4096),
    optional("text_config.num_hidden_layers", 4096), optional("text_config.hidden_size", 1 << 17),
    optional("text_config.num_attention_heads", 4096), optional("text_config.ffn_dim", 1 << 20),
    optional("text_config.vocab_size", 1 << 22), optional("text_config.max_position_embeddings", 1 << 22),
    optional("vision_config.image_size", 1 << 14), optional("vision_config.patch_size", 1 << 10),
    optional("vision_config.hidden_size", 1 << 17), optional("vision_config.intermediate_size", 1 << 20),
    optional("qformer_config.hidden_size", 1 << 17),
)


def _chatglm3_extra(cfg: dict[str, Any], context: int, nbytes: int) -> tuple[int, int]:
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("multi_query_group_num", heads) if cfg.get("multi_query_attention") else heads
    head_dim = cfg.get("kv_channels", cfg["hidden_size"] // heads)
    kv = kv_cache_bytes(cfg["num_layers"], kv_heads, head_dim, context, nbytes)
    act = decoder_activation_bytes(cfg["hidden_size"], cfg["ffn_hidden_size"], cfg["padded_vocab_size"],
                                   min(context, PREFILL_CHUNK), nbytes)
    return kv, act


def _chatglm3_role(name: str) -> int | str:
    prefix = "transformer.encoder.layers."
    if name.startswith(prefix):
        return int(name[len(prefix):].split(".", 1)[0])
    if name.startswith(("transformer.encoder.final_layernorm", "transformer.output_layer")):
        return "last"
    return "first"  # the embedding, and the RoPE table ChatGLM3 stores


def _blip2_extra(cfg: dict[str, Any], context: int, nbytes: int) -> tuple[int, int]:
    text = cfg.get("text_config") or {}
    vision = cfg.get("vision_config") or {}
    layers = text.get("num_hidden_layers", 32)
    hidden = text.get("hidden_size", 2560)
    heads = text.get("num_attention_heads", 32)
    # twice: the decode step's static cache, and transformers' own cache while it prefills the
    # image and question (both live at once; measured on the H200: 8420 MiB held against 8143
    # predicted when this was counted once)
    kv = 2 * kv_cache_bytes(layers, heads, hidden // heads, context, nbytes)
    patches = (vision.get("image_size", 224) // vision.get("patch_size", 14)) ** 2 + 1
    v_hidden = vision.get("hidden_size", 1408)
    act = decoder_activation_bytes(hidden, text.get("ffn_dim", 4 * hidden), text.get("vocab_size", 50272),
                                   context, nbytes)
    act += patches * (4 * v_hidden + vision.get("intermediate_size", 6144)) * nbytes * 2
    return kv, act


# Causal LMs transformers ships (no remote code) whose KV cache the estimator can size from the
# config: the layer count, KV heads, head size and, where a layer slides, its window.
CAUSAL_LM_TYPES = ("llama", "mistral", "qwen2", "qwen3")
CAUSAL_LM_CONFIG = (
    count("num_hidden_layers", 4096), count("hidden_size", 1 << 17), count("intermediate_size", 1 << 20),
    count("num_attention_heads", 4096), count("vocab_size", 1 << 22), optional("num_key_value_heads", 4096),
    optional("head_dim", 1 << 14), optional("max_position_embeddings", 1 << 24, lo=16),
    optional("sliding_window", 1 << 24), optional("max_window_layers", 4096, lo=0),
    Field("use_sliding_window", "flag", required=False),
)
KNOWN_LAYER_TYPES = ("full_attention", "sliding_attention")


def causal_lm_layers(cfg: dict[str, Any]) -> list[int | None]:
    """Each decoder layer's attention window (None: the whole context), as transformers' static
    cache sizes it: the config's layer_types when given; else Qwen's use_sliding_window (layers
    from max_window_layers on slide), or a sliding_window for all (Mistral)."""
    n = int(cfg["num_hidden_layers"])
    window = cfg.get("sliding_window")
    types = cfg.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != n or any(t not in KNOWN_LAYER_TYPES for t in types):
            raise CheckpointError(f"layer_types must list {n} of {', '.join(KNOWN_LAYER_TYPES)}; gputui cannot size "
                                  "the KV cache of other layer kinds")
        return [window if t == "sliding_attention" else None for t in types]
    if cfg.get("model_type") in ("qwen2", "qwen3"):
        if not cfg.get("use_sliding_window") or window is None:
            return [None] * n
        first = int(cfg.get("max_window_layers", n))
        return [window if i >= first else None for i in range(n)]
    return [window] * n if window is not None else [None] * n


def _causal_lm_check(cfg: dict[str, Any], path: Path) -> None:
    if cfg.get("auto_map") or cfg.get("trust_remote_code"):
        raise CheckpointError(f"{path}: this model needs its own remote code (auto_map in config.json); gputui runs "
                              "only architectures transformers ships, with trust_remote_code off")
    if cfg.get("layer_types") is not None and any(w is not None for w in causal_lm_layers(cfg)) \
            and cfg.get("sliding_window") is None:
        raise CheckpointError(f"{path}: layer_types has sliding layers but config.json gives no sliding_window")
    causal_lm_layers(cfg)


def _causal_lm_extra(cfg: dict[str, Any], context: int, nbytes: int) -> tuple[int, int]:
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    kv = sum(kv_cache_bytes(1, kv_heads, head_dim, min(context, w) if w else context, nbytes)
             for w in causal_lm_layers(cfg))
    act = decoder_activation_bytes(cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"],
                                   min(context, PREFILL_CHUNK), nbytes)
    return kv, act


KINDS: dict[str, ModelKind] = {
    "chatglm3": ModelKind(
        "chatglm3", ("chatglm",), "gputui.models.glm.glm_runtime:GlmRuntime",
        _chatglm3_extra, 8192, "ChatGLM3 chat model (native GLM, no remote code)",
        tensor_role=_chatglm3_role, fast_load=True, config_fields=CHATGLM3_CONFIG, batches=True,
        needs_files=(("tokenizer.model", SENTENCEPIECE_MAGIC),),
        input_hint="message · /describe IMAGE [question] · /system TEXT · /set temperature=0.7",
    ),
    "blip2": ModelKind(
        "blip2", ("blip-2",), "gputui.models.blip2.runtime:Blip2Runtime",
        _blip2_extra, 512, "BLIP2 image captioning and visual question answering", fast_load=True,
        config_fields=BLIP2_CONFIG, takes_images=True, describes_images=True, settings=("max_new_tokens",),
        input_hint="/image PATH [question] · /set max_new_tokens=N",
    ),
    "causal-lm": ModelKind(
        "causal-lm", CAUSAL_LM_TYPES, "gputui.models.causal_lm:CausalLMRuntime",
        _causal_lm_extra, 4096, "a Hugging Face causal LM (Llama, Mistral, Qwen2, Qwen3; no remote code)",
        config_fields=CAUSAL_LM_CONFIG, config_check=_causal_lm_check,
        needs_files=(("tokenizer.json", b"{"), ("tokenizer_config.json", b"{")),
    ),
}


MODEL_PACKAGES = ("torch", "transformers", "safetensors", "sentencepiece", "accelerate")


@functools.cache
def models_missing() -> str | None:
    """Why this Python cannot run a model's worker (a base install: `pip install gputui` watches
    GPUs and serves the dashboard without torch), or None. Looked up, never imported: the server
    stays free of torch."""
    missing = [name for name in MODEL_PACKAGES if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (f"running models needs {', '.join(missing)} in this Python: pip install 'gputui[models]' "
            "(on a GPU server, your CUDA build of torch first)")


ENTRY_POINT_GROUP = "gputui.kinds"
PLUGIN_ERRORS: list[str] = []  # one line per kind plugin that did not load, for `gputui doctor`
_plugins_read = False


def register_kind(kind: ModelKind) -> None:
    """Add (or replace) a kind."""
    KINDS[kind.name] = kind


def read_plugins(*, again: bool = False) -> None:
    """Add the kinds other packages declare (entry points of ENTRY_POINT_GROUP), once per process."""
    global _plugins_read
    if _plugins_read and not again:
        return
    _plugins_read = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            kind = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin must not stop gputui; doctor says why
            PLUGIN_ERRORS.append(f"kind plugin {ep.name} ({ep.value}): {type(e).__name__}: {e}")
            continue
        if not isinstance(kind, ModelKind):
            PLUGIN_ERRORS.append(f"kind plugin {ep.name} ({ep.value}) is a {type(kind).__name__}, not a ModelKind")
            continue
        register_kind(kind)


def kind_names() -> list[str]:
    read_plugins()
    return list(KINDS)


def kind_named(name: str) -> ModelKind:
    read_plugins()
    try:
        return KINDS[name]
    except KeyError:
        raise CheckpointError(f"unknown model kind {name!r}; known kinds: {', '.join(KINDS)}") from None


def detect_kind(path: Path) -> str:
    """The kind of a checkpoint folder, from its config.json's model_type (what the load form's
    "auto" and a profile entry without `kind` use)."""
    read_plugins()
    mt = read_config(path).get("model_type")
    found = next((k.name for k in KINDS.values() if isinstance(mt, str) and mt in k.model_types), None)
    if found is None:
        known = sorted({t for k in KINDS.values() for t in k.model_types})
        raise CheckpointError(f"{path}: model_type {str(mt)[:40]!r} is not one gputui runs (known: {', '.join(known)})")
    return found


def check_kind(kind: ModelKind, path: Path) -> dict[str, Any]:
    """The config, after checking the folder really holds this kind of model, with every field
    the kind reads of the right type and range, and the files it needs there and plausible."""
    read_plugins()
    cfg = read_config(path)
    mt = cfg.get("model_type")
    if not isinstance(mt, str) or mt not in kind.model_types:
        actual = next((k.name for k in KINDS.values() if mt in k.model_types), None) if isinstance(mt, str) else None
        found = f"a {actual} checkpoint" if actual else f"model_type {str(mt)[:40]!r}"
        raise CheckpointError(f"{path}: this is {found}, not {kind.name}")
    check_config(cfg, kind.config_fields, path)
    if kind.config_check is not None:
        kind.config_check(cfg, path)
    for name, magic in kind.needs_files:
        with open_regular(regular_file(path / name, name)) as f:
            head = f.read(len(magic))
        if head != magic:
            raise CheckpointError(f"{path / name}: not a {name} this kind can read (it starts with {head!r})")
    return cfg


def estimate(kind: ModelKind, path: Path, dtype: str, context: int | None = None, slots: int | None = None
             ) -> Estimate:
    """`slots`: replies answered at once (max_batch), each with a whole context of KV cache."""
    cfg = check_kind(kind, path)
    ctx = min(context or kind.default_context, _max_positions(cfg) or 1 << 30)
    nbytes = TARGET_BYTES[dtype]
    kv, act = kind.estimate_extra(cfg, ctx, nbytes)
    return Estimate(weight_bytes(path, dtype), kv * (slots or 1 if kind.batches else 1), act)


def split_costs(kind: ModelKind, path: Path, dtype: str, context: int | None = None,
                est: Estimate | None = None) -> SplitCosts:
    # (a split model runs on transformers' GLM, one reply at a time: one slot)
    """The model's bytes by where they must live, for spreading its layers over several GPUs
    (`est`: the model's estimate, if the caller has it already)."""
    if kind.tensor_role is None:
        raise CheckpointError(f"{kind.name} models run on one GPU; name one GPU")
    est = est or estimate(kind, path, dtype, context)
    first = last = 0
    layers: dict[int, int] = {}
    for t in tensor_infos(path):
        n = device_bytes(t, dtype)
        role = kind.tensor_role(t.name)
        if role == "first":
            first += n
        elif role == "last":
            last += n
        else:
            layers[int(role)] = layers.get(int(role), 0) + n
    if not layers or sorted(layers) != list(range(len(layers))):
        raise CheckpointError(f"{path}: its decoder layers are not numbered 0..n-1, so they cannot be split")
    kv_per_layer = est.kv_cache_bytes // len(layers)
    fixed = est.activation_bytes + est.context_bytes + est.workspace_bytes + est.slack_bytes
    return SplitCosts(tuple(layers[i] + kv_per_layer for i in range(len(layers))), first, last, fixed)


def preflight_costs(kind: ModelKind, path: Path, dtype: str, context: int | None,
                    gpus: Sequence[str], slots: int | None = None) -> tuple[Estimate, SplitCosts | None]:
    """What a placement needs: the estimate, and the split costs when several GPUs are named
    (a split model answers one reply at a time, whatever `slots` says)."""
    split_asked = len(named_gpus(gpus)) > 1
    est = estimate(kind, path, dtype, context, None if split_asked else slots)
    split = split_costs(kind, path, dtype, context, est) if split_asked else None
    return est, split


def _max_positions(cfg: dict[str, Any]) -> int | None:
    """The longest context the model itself allows (the worker caps max_context the same way)."""
    v = cfg.get("seq_length") or cfg.get("max_position_embeddings")
    return int(v) if isinstance(v, int) else None
