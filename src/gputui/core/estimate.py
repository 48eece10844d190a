"""How much GPU memory a model will need, computed before anything is loaded.

need = weights (exact, from the safetensors headers, in the target dtype)
     + KV cache for the configured max context (from config.json)
     + an activation allowance for a prefill of that context
     + the CUDA context and the cuBLAS handle/workspace of the new worker process
     + the caching allocator's slack.
Calibrated against NVML on an H100 (bench/RESULTS.md): the target is within 5% at real size.
"""

from __future__ import annotations

from dataclasses import dataclass

from gputui.core.memory import CUDA_CONTEXT_BYTES, FIRST_MATMUL_BYTES
from gputui.core.units import MiB

# torch's caching allocator rounds blocks and keeps a little slack; measured as the gap
# between torch.cuda.memory_reserved() and the sum of tensor sizes after a load (bench).
ALLOCATOR_SLACK_BYTES = 64 * MiB


@dataclass(frozen=True)
class Estimate:
    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    context_bytes: int = CUDA_CONTEXT_BYTES
    workspace_bytes: int = FIRST_MATMUL_BYTES
    slack_bytes: int = ALLOCATOR_SLACK_BYTES

    @property
    def total_bytes(self) -> int:
        return (self.weights_bytes + self.kv_cache_bytes + self.activation_bytes
                + self.context_bytes + self.workspace_bytes + self.slack_bytes)

    def parts(self) -> dict[str, int]:
        return {
            "weights": self.weights_bytes, "kv_cache": self.kv_cache_bytes,
            "activations": self.activation_bytes, "cuda_context": self.context_bytes,
            "cublas": self.workspace_bytes, "allocator_slack": self.slack_bytes,
        }


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, context: int, dtype_bytes: int) -> int:
    """Keys and values for every layer, for `context` tokens, batch 1."""
    return 2 * layers * kv_heads * head_dim * context * dtype_bytes


def decoder_activation_bytes(hidden: int, ffn: int, vocab: int, prefill: int, dtype_bytes: int) -> int:
    """Peak temporaries of one prefill chunk: the MLP's gate/up output and a few hidden-sized
    buffers, plus float32 logits of the last position (the loop only keeps the last one)."""
    return prefill * (2 * ffn + 6 * hidden) * dtype_bytes + vocab * 4 * 2
