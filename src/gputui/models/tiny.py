"""Tiny checkpoints in the published formats, for tests and `gputui --demo`.

They are written in seconds on a CPU with random weights, and cached: a ChatGLM3 folder exactly
as published (config.json with model_type chatglm, sharded safetensors with the real tensor
names and an index json, a SentencePiece tokenizer.model trained on the fly) and a BLIP2
folder written by transformers' own save_pretrained. The real loaders read them unchanged.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gputui.core import env

TINY_VERSION = "4"  # bump when the layout changes, so caches are rebuilt

CORPUS = [
    "hello world, this is a tiny model for tests.",
    "The quick brown fox jumps over the lazy dog.",
    "GPUs hold models; the scheduler loads them one at a time.",
    "你好，世界。我们在终端里聊天。",
    "图片里有一只猫和一只狗。",
    "cuBLAS needs memory for its handle and workspace.",
    "Describe the image, then discuss it with ChatGLM3.",
    "numbers 0 1 2 3 4 5 6 7 8 9 and symbols [ ] { } < > / \\ | ! ? * # @",
]


def default_cache_dir() -> Path:
    given = env.get("GPUTUI_TINY_CACHE")
    if given:
        return Path(given)
    import platformdirs

    return Path(platformdirs.user_cache_dir("gputui")) / "tiny"


def _cached(root: Path | None, name: str, build: Callable[[Path], None]) -> Path:
    root = root or default_cache_dir()
    target = root / f"{name}-v{TINY_VERSION}"
    if (target / ".complete").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            os.replace(tmp, target)  # atomic: a reader sees no half-written folder
        except OSError:  # another process won the race; its copy is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def train_sentencepiece(vocab_size: int = 640) -> bytes:
    """A small BPE SentencePiece model with byte fallback, ids unk 0 / bos 1 / eos 2 as ChatGLM3."""
    import sentencepiece

    sentences = [f"{s} {i}" for i in range(40) for s in CORPUS]
    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=out, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False,
        minloglevel=2, num_threads=1,
        # As ChatGLM3's own model: no NFKC folding (full-width punctuation stays) and
        # whitespace kept, so any text round-trips exactly.
        normalization_rule_name="identity", remove_extra_whitespaces=False,
    )
    return out.getvalue()


def chatglm3_config(n_pieces: int, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "_name_or_path": "tiny-chatglm3",
        "model_type": "chatglm",
        "architectures": ["ChatGLMModel"],
        "auto_map": {
            "AutoConfig": "configuration_chatglm.ChatGLMConfig",
            "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
        },
        "add_bias_linear": False, "add_qkv_bias": True, "apply_query_key_layer_scaling": True,
        "apply_residual_connection_post_layernorm": False, "attention_dropout": 0.0,
        "attention_softmax_in_fp32": True, "bias_dropout_fusion": True,
        "ffn_hidden_size": 96, "fp32_residual_connection": False, "hidden_dropout": 0.0,
        "hidden_size": 64, "kv_channels": 16, "layernorm_epsilon": 1e-05,
        "multi_query_attention": True, "multi_query_group_num": 2, "num_attention_heads": 4,
        "num_layers": 2, "original_rope": True,
        "padded_vocab_size": ((n_pieces + 9 + 63) // 64) * 64,
        "post_layer_norm": True, "rmsnorm": True, "seq_length": 512,
        "use_cache": True, "torch_dtype": "float16", "eos_token_id": 2, "pad_token_id": 0,
        "tie_word_embeddings": False,
    }
    cfg.update(overrides)
    return cfg


def chatglm3_state_dict(cfg: dict[str, Any], generator: torch.Generator, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Random tensors under ChatGLM3's published names and shapes."""
    h, ffn, v = cfg["hidden_size"], cfg["ffn_hidden_size"], cfg["padded_vocab_size"]
    heads, d, kv = cfg["num_attention_heads"], cfg["kv_channels"], cfg["multi_query_group_num"]
    qkv = heads * d + 2 * kv * d

    def rnd(*shape: int, scale: float = 0.08) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator) * scale).to(dtype)

    def norm() -> torch.Tensor:
        return (1.0 + torch.randn(h, generator=generator) * 0.05).to(dtype)

    sd = {"transformer.embedding.word_embeddings.weight": rnd(v, h, scale=0.5)}
    rot = d // 2
    sd["transformer.rotary_pos_emb.inv_freq"] = (
        1.0 / (10000 ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot))
    ).to(dtype)
    for i in range(cfg["num_layers"]):
        p = f"transformer.encoder.layers.{i}."
        sd[p + "input_layernorm.weight"] = norm()
        sd[p + "self_attention.query_key_value.weight"] = rnd(qkv, h)
        sd[p + "self_attention.query_key_value.bias"] = rnd(qkv, scale=0.02)
        sd[p + "self_attention.dense.weight"] = rnd(h, heads * d)
        sd[p + "post_attention_layernorm.weight"] = norm()
        sd[p + "mlp.dense_h_to_4h.weight"] = rnd(2 * ffn, h)
        sd[p + "mlp.dense_4h_to_h.weight"] = rnd(h, ffn)
    sd["transformer.encoder.final_layernorm.weight"] = norm()
    sd["transformer.output_layer.weight"] = rnd(v, h, scale=0.3)
    return sd


def write_sharded_safetensors(folder: Path, sd: dict[str, torch.Tensor], shards: int) -> None:
    """model-0000N-of-0000M.safetensors + model.safetensors.index.json, as the hub publishes."""
    from safetensors.torch import save_file

    names = list(sd)
    per = -(-len(names) // shards)
    weight_map: dict[str, str] = {}
    total = 0
    for s in range(shards):
        part = names[s * per:(s + 1) * per]
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: sd[n].contiguous() for n in part}, str(folder / fname), metadata={"format": "pt"})
        for n in part:
            weight_map[n] = fname
            total += sd[n].numel() * sd[n].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def build_chatglm3(folder: Path, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                   shards: int = 2, **overrides: Any) -> None:
    sp = train_sentencepiece()
    (folder / "tokenizer.model").write_bytes(sp)
    import sentencepiece

    n_pieces = sentencepiece.SentencePieceProcessor(model_proto=sp).vocab_size()
    cfg = chatglm3_config(n_pieces, **overrides)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "name_or_path": "tiny-chatglm3", "remove_space": False, "do_lower_case": False,
        "padding_side": "left",
        "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]},
    }, indent=2))
    g = torch.Generator().manual_seed(seed)
    write_sharded_safetensors(folder, chatglm3_state_dict(cfg, g, dtype), shards)


def tiny_chatglm3(root: Path | None = None) -> Path:
    """The cached tiny ChatGLM3 folder (built on first use)."""
    return _cached(root, "chatglm3", build_chatglm3)


# -- BLIP2 ------------------------------------------------------------------------------


def build_blip2(folder: Path, *, seed: int = 0) -> None:
    """A tiny Blip2ForConditionalGeneration with an OPT text model, saved by transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (  # type: ignore[attr-defined]  # GPT2TokenizerFast: exported lazily
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
        GPT2TokenizerFast,
        OPTConfig,
    )

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>", "<image>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tk.train_from_iterator([f"{s} {i}" for i in range(20) for s in CORPUS], trainer)
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=tk, bos_token="</s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", additional_special_tokens=["<image>"],
    )
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    num_query = 4
    config = Blip2Config(
        vision_config=Blip2VisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=30, patch_size=2,
        ).to_dict(),
        qformer_config=Blip2QFormerConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            encoder_hidden_size=32, vocab_size=100,
        ).to_dict(),
        text_config=OPTConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, ffn_dim=64,
            num_attention_heads=2, word_embed_proj_dim=32, max_position_embeddings=256,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ).to_dict(),
        num_query_tokens=num_query,
        image_token_index=image_token_id,
    )
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    image_processor = BlipImageProcessor(size={"height": 30, "width": 30})
    Blip2Processor(image_processor=image_processor, tokenizer=tokenizer,
                   num_query_tokens=num_query).save_pretrained(str(folder))


def tiny_blip2(root: Path | None = None) -> Path:
    """The cached tiny BLIP2 folder (built on first use)."""
    return _cached(root, "blip2", build_blip2)


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CAUSAL_LM_ARCHS = ("llama", "qwen2", "mistral")


def build_causal_lm(folder: Path, arch: str, *, seed: int = 0) -> None:
    """A tiny causal LM of one architecture transformers ships, as the Hub publishes them:
    config.json, sharded safetensors with an index (save_pretrained), a byte-level BPE
    tokenizer.json trained here with `tokenizers`, and a ChatML chat template. Mistral's sliding
    window (32) is shorter than the tests' context, so its cache is sized by the window."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="<|im_end|>",
                                  pad_token="</s>")
    tok.chat_template = CHATML
    vocab = len(tok)
    common: dict[str, Any] = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                  pad_token_id=tok.pad_token_id, tie_word_embeddings=arch == "qwen2")
    extras: dict[str, dict[str, Any]] = {"mistral": {"sliding_window": 32, "head_dim": 16},
                                         "qwen2": {"use_sliding_window": False}}
    extra = extras.get(arch, {})
    cfg = AutoConfig.for_model(arch, **common, **extra)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():  # larger than the default init: attention that picks, so a wrong position shows
        for prm in model.parameters():
            if prm.dim() > 1:
                prm.normal_(0.0, 0.25)
    model.save_pretrained(str(folder), max_shard_size="100KB", safe_serialization=True)
    tok.save_pretrained(str(folder))


def tiny_causal_lm(arch: str, root: Path | None = None) -> Path:
    """The cached tiny causal LM of `arch` (llama, qwen2 or mistral), built on first use."""
    if arch not in CAUSAL_LM_ARCHS:
        raise ValueError(f"no tiny {arch}; one of {', '.join(CAUSAL_LM_ARCHS)}")
    seed = CAUSAL_LM_ARCHS.index(arch)  # Llama and Mistral have the same shapes: not the same weights
    return _cached(root, f"causal-lm-{arch}", lambda folder: build_causal_lm(folder, arch, seed=seed))


def main() -> None:
    """`python -m gputui.models.tiny`: build (or find) the demo models, print their folders.

    The dashboard runs this as a subprocess: it must never import torch itself."""
    import json as _json

    print(_json.dumps({"chatglm3": str(tiny_chatglm3()), "blip2": str(tiny_blip2())}))


if __name__ == "__main__":
    main()
