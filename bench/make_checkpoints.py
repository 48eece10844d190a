#!/usr/bin/env python3
"""Write real-size checkpoints with random weights in the published formats (device only).

ChatGLM3-6B: 7 safetensors shards + index, config.json (model_type chatglm), tokenizer.model.
BLIP2-OPT-2.7B: transformers' save_pretrained layout with a processor.
Speed does not depend on the values, so random weights measure load and decode honestly.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def chatglm3_6b(folder: Path, dtype: torch.dtype = torch.bfloat16) -> None:
    from safetensors.torch import save_file

    from gputui.models.tiny import chatglm3_config, train_sentencepiece

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(train_sentencepiece())
    cfg = chatglm3_config(0, hidden_size=4096, ffn_hidden_size=13696, num_layers=28, num_attention_heads=32,
                          kv_channels=128, multi_query_group_num=2, padded_vocab_size=65024, seq_length=8192)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    h, ffn, v = 4096, 13696, 65024
    qkv = 32 * 128 + 2 * 2 * 128
    names: list[tuple[str, tuple[int, ...]]] = [("transformer.embedding.word_embeddings.weight", (v, h))]
    for i in range(28):
        p = f"transformer.encoder.layers.{i}."
        names += [(p + "input_layernorm.weight", (h,)), (p + "self_attention.query_key_value.weight", (qkv, h)),
                  (p + "self_attention.query_key_value.bias", (qkv,)), (p + "self_attention.dense.weight", (h, h)),
                  (p + "post_attention_layernorm.weight", (h,)), (p + "mlp.dense_h_to_4h.weight", (2 * ffn, h)),
                  (p + "mlp.dense_4h_to_h.weight", (h, ffn))]
    names += [("transformer.encoder.final_layernorm.weight", (h,)), ("transformer.output_layer.weight", (v, h))]
    shards = 7
    per = -(-len(names) // shards)
    weight_map, total = {}, 0
    g = torch.Generator(device="cuda").manual_seed(0)
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {}
        for name, shape in names[s * per:(s + 1) * per]:
            if name.endswith("layernorm.weight"):
                t = torch.ones(shape, dtype=dtype, device="cuda")
            else:
                t = (torch.randn(shape, generator=g, device="cuda", dtype=torch.float32) * 0.02).to(dtype)
            part[name] = t.cpu()
            weight_map[name] = fname
            total += t.numel() * t.element_size()
        save_file(part, str(folder / fname), metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                    "weight_map": weight_map}))


def blip2_opt_2_7b(folder: Path) -> None:
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        OPTConfig,
    )

    from gputui.models import tiny

    tmp = folder.parent / (folder.name + "-tok")
    tmp.mkdir(parents=True, exist_ok=True)
    tiny.build_blip2(tmp)  # borrow the tiny processor files (tokenizer with <image>, 30px processor)
    from transformers import Blip2Processor, BlipImageProcessor

    proc = Blip2Processor.from_pretrained(str(tmp))
    image_token = proc.tokenizer.convert_tokens_to_ids("<image>")
    config = Blip2Config(
        vision_config=Blip2VisionConfig(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39,
                                        num_attention_heads=16, image_size=224, patch_size=14).to_dict(),
        qformer_config=Blip2QFormerConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                          intermediate_size=3072, encoder_hidden_size=1408).to_dict(),
        text_config=OPTConfig(vocab_size=50272, hidden_size=2560, num_hidden_layers=32, ffn_dim=10240,
                              num_attention_heads=32, word_embed_proj_dim=2560, max_position_embeddings=2048,
                              pad_token_id=proc.tokenizer.pad_token_id, bos_token_id=proc.tokenizer.bos_token_id,
                              eos_token_id=proc.tokenizer.eos_token_id).to_dict(),
        num_query_tokens=32, image_token_index=image_token,
    )
    with torch.device("cuda"):
        model = Blip2ForConditionalGeneration(config).to(torch.float16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(str(folder), safe_serialization=True)
    Blip2Processor(image_processor=BlipImageProcessor(size={"height": 224, "width": 224}),
                   tokenizer=proc.tokenizer, num_query_tokens=32).save_pretrained(str(folder))
    print(f"blip2 parameters {n}")
    del model
    torch.cuda.empty_cache()


CAUSAL_LMS = {  # the published configs' shapes (random weights, bf16)
    "llama-3-8b": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                 num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                 max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=False)),
    "qwen2.5-7b": ("qwen2", dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                 num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                                 max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=False,
                                 use_sliding_window=False, sliding_window=131072, max_window_layers=28)),
}


def causal_lm(folder: Path, name: str, dtype: torch.dtype = torch.bfloat16) -> None:
    """A Hub-layout causal LM of a published model's shapes: config.json, 4 GB safetensors shards
    with an index, and the tiny test tokenizer with its ChatML template (random weights choose
    ids past its vocabulary; those decode to nothing, which decode speed does not mind)."""
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from gputui.models import tiny

    arch, shape = CAUSAL_LMS[name]
    tok_dir = folder.parent / (folder.name + "-tok")
    tok_dir.mkdir(parents=True, exist_ok=True)
    tiny.build_causal_lm(tok_dir, "llama")
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tok_dir / f).is_file():
            (folder / f).write_bytes((tok_dir / f).read_bytes())
    cfg = AutoConfig.for_model(arch, **shape, bos_token_id=1, eos_token_id=4, dtype="bfloat16")
    cfg.save_pretrained(str(folder))
    with torch.device("meta"):
        names = [(n, tuple(t.shape)) for n, t in AutoModelForCausalLM.from_config(cfg).state_dict().items()]
    g = torch.Generator(device="cuda").manual_seed(0)
    weight_map: dict[str, str] = {}
    part: dict[str, torch.Tensor] = {}
    total, size, k = 0, 0, 0

    def flush() -> None:
        nonlocal part, size, k
        if not part:
            return
        k += 1
        fname = f"model-{k:05d}.safetensors"
        save_file(part, str(folder / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
        part, size = {}, 0

    for n, shp in names:
        t = (torch.ones(shp, dtype=dtype, device="cuda") if n.endswith("norm.weight") else
             (torch.randn(shp, generator=g, device="cuda") * 0.02).to(dtype))
        part[n] = t.cpu()
        size += t.numel() * t.element_size()
        total += t.numel() * t.element_size()
        if size > 4 << 30:
            flush()
    flush()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                    "weight_map": weight_map}))
    print(f"{name}: {total / 1e9:.2f} GB in {k} shards", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--only", choices=["chatglm3", "blip2", *CAUSAL_LMS], help="write just this one")
    a = ap.parse_args()
    if a.only in CAUSAL_LMS:
        causal_lm(a.root / a.only, a.only)
        return
    t = time.time()
    if a.only != "blip2":
        chatglm3_6b(a.root / "chatglm3-6b")
        print(f"chatglm3-6b written in {time.time() - t:.1f}s", flush=True)
    if a.only == "chatglm3":
        return
    t = time.time()
    blip2_opt_2_7b(a.root / "blip2-opt-2.7b")
    print(f"blip2-opt-2.7b written in {time.time() - t:.1f}s", flush=True)


if __name__ == "__main__":
    main()
