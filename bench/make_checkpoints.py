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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--only", choices=["chatglm3", "blip2"], help="write just this one")
    a = ap.parse_args()
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
