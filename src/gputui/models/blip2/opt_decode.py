"""BLIP2's language model (OPT) decoding one token at a time from a static KV cache, replayed
as one CUDA graph per token.

Why: transformers' generate() at batch 1 is bound by the CPU: 57.5 tok/s eager and 89-95 tok/s
through gputui's streamer on an H200, where OPT-2.7B's 5.3 GB of weights allow ~700. A static
cache gives every step the same shapes and addresses, so the step is captured once and replayed.
The step is OPT's own decoder layer written out with the same modules (pre-LayerNorm, ReLU MLP,
learned positions), run only after it has been checked against transformers' forward. The
prompt (image queries + question) is still prefilled by transformers' generate(), whose cache
is then copied into ours.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from gputui.models.common.hf import layer_kv


class OptDecodeUnsupported(RuntimeError):
    """A language model this step does not know (the caller keeps generate())."""


class OptDecodeStep:
    def __init__(self, lm: Any, max_len: int, device: torch.device) -> None:
        cfg = lm.config
        dec = getattr(getattr(lm, "model", None), "decoder", None)
        if getattr(cfg, "model_type", "") != "opt" or dec is None:
            raise OptDecodeUnsupported(f"the language model is {getattr(cfg, 'model_type', '?')}, not OPT")
        if not cfg.do_layer_norm_before or dec.project_in is not None or dec.project_out is not None \
                or dec.final_layer_norm is None or cfg.activation_function != "relu":
            raise OptDecodeUnsupported("an OPT layout other than OPT-2.7B's (post-LN, projections or not ReLU)")
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // self.heads
        self.embed = dec.embed_tokens.weight
        self.positions = dec.embed_positions.weight
        self.offset = int(getattr(dec.embed_positions, "offset", 2))  # OPT's learned positions start at 2
        self.layers = list(dec.layers)
        self.final_norm = dec.final_layer_norm
        self.head = lm.lm_head.weight
        self.max_len = max_len
        shape = (len(self.layers), self.heads, max_len, self.head_dim)
        self.k = torch.zeros(shape, dtype=self.embed.dtype, device=device)
        self.v = torch.zeros(shape, dtype=self.embed.dtype, device=device)
        self.slots = torch.arange(max_len, device=device)

    def load_prefix(self, cache: Any, n: int) -> None:
        """Copy the first n positions of transformers' cache (after its prefill) into ours."""
        if n > self.max_len:
            raise ValueError(f"prompt of {n} tokens is over the {self.max_len}-token cache")
        for i in range(len(self.layers)):
            keys, values = layer_kv(cache, i)
            self.k[i, :, :n].copy_(keys[0, :, :n])
            self.v[i, :, :n].copy_(values[0, :, :n])

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits of the token after `ids` (one id, any shape) at position `pos` ([1]); writes
        its key and value at slot `pos`. Only tensor operations: the same call is captured and
        replayed (decode_graph.GraphDecodeStep)."""
        x = F.embedding(ids.reshape(1), self.embed) + F.embedding(pos + self.offset, self.positions)  # [1, hidden]
        visible = (self.slots <= pos).view(1, 1, 1, -1)
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            q = attn.q_proj(h).view(1, self.heads, 1, self.head_dim)
            self.k[i].index_copy_(1, pos, attn.k_proj(h).view(self.heads, 1, self.head_dim))
            self.v[i].index_copy_(1, pos, attn.v_proj(h).view(self.heads, 1, self.head_dim))
            o = F.scaled_dot_product_attention(q, self.k[i].unsqueeze(0), self.v[i].unsqueeze(0), attn_mask=visible)
            x = x + attn.out_proj(o.reshape(1, -1))
            x = x + layer.fc2(F.relu(layer.fc1(layer.final_layer_norm(x))))
        return F.linear(self.final_norm(x), self.head)[0]
