"""Kind causal-lm on tiny checkpoints of three architectures (Llama, Qwen2, Mistral with a
sliding window shorter than the context), in the Hub's layout: the preflight sizes the KV cache
transformers allocates, the runtime's greedy reply is transformers' generate(), stop tokens and
context overflow behave as for ChatGLM3, and remote code is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from gputui.core.checkpoint_info import CheckpointError
from gputui.core.kinds import check_kind, estimate, kind_named

CPU = torch.device("cpu")
CONTEXT = 96


@pytest.fixture(scope="module")
def runtime(tiny_causal_lm_path: Path):  # noqa: ANN201
    from gputui.models.causal_lm import CausalLMRuntime

    rt = CausalLMRuntime.load({"path": str(tiny_causal_lm_path), "max_context": CONTEXT}, [CPU], torch.float32)
    rt.warm_up()
    return rt


def test_the_preflight_sizes_the_cache_transformers_allocates(runtime, tiny_causal_lm_path: Path) -> None:  # noqa: ANN001
    est = estimate(kind_named("causal-lm"), tiny_causal_lm_path, "float32", CONTEXT)
    assert est.kv_cache_bytes == runtime.cache_bytes() > 0
    assert est.weights_bytes == runtime.weight_bytes() or runtime.model.config.tie_word_embeddings
    if runtime.model.config.model_type == "mistral":  # the window (32), not the context (96)
        assert est.kv_cache_bytes == estimate(kind_named("causal-lm"), tiny_causal_lm_path, "float32", 32).kv_cache_bytes


def test_a_greedy_reply_is_what_generate_gives(runtime) -> None:  # noqa: ANN001
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]
    ids = runtime.tok.chat_ids(msgs)
    with torch.inference_mode():
        want = runtime.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                                      eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
    pieces: list[str] = []
    stats = runtime.generate({"messages": msgs, "params": {"max_new_tokens": 12, "temperature": 0,
                                                           "ignore_stop": True}},
                             lambda piece, **_k: pieces.append(piece), lambda: False)
    assert stats["new_tokens"] == 12 and stats["finish"] == "length"
    assert "".join(pieces) == runtime.tok.decode(want)


def test_llama_and_qwen2_decode_on_gputuis_decoder_and_a_window_keeps_transformers(runtime) -> None:  # noqa: ANN001
    """The reply above came from gputui's own decoder (checked against transformers' forward at
    warm-up; on a disagreement the runtime falls back and this test says so) - except Mistral
    here, whose window (32) lies inside the context: that stays on transformers' forward."""
    info = runtime.info()
    if runtime.model.config.model_type == "mistral":
        assert info["decoder"] == "transformers" and "sliding window of 32" in info["own_decoder_refusal"]
    else:
        assert info["decoder"] == "gputui (torch)", info["own_decoder_refusal"]


def test_the_decoders_logits_are_transformers_own(runtime) -> None:  # noqa: ANN001
    """Prefill in chunks, then steps: the same logits as transformers' forward over the whole
    sequence (fp32 on the CPU: rounding only)."""
    from gputui.models.common.decode_graph import relative_error

    if runtime.own is None:
        pytest.skip("this architecture decodes on transformers' forward")
    own = runtime.own
    ids = runtime.tok.chat_ids([{"role": "user", "content": "a longer prompt " * 3}])
    assert 14 < len(ids) < 80
    own.chunk = 7  # several chunks, the last one short
    try:
        got = [own.prefill(ids)] + [own.step(t, len(ids) + i) for i, t in enumerate((5, 9, 11))]
    finally:
        own.chunk = 512
    with torch.inference_mode():
        full = runtime.model(input_ids=torch.tensor([ids + [5, 9, 11]]), use_cache=False).logits[0]
    for i, row in enumerate(got):
        assert relative_error(row, full[len(ids) - 1 + i].float()) < 1e-4, i


def test_a_decoder_that_fails_at_warm_up_leaves_transformers_serving(tiny_causal_lm_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel that raises during the own decoder's checks is a refusal (said in info), not a
    failed load: transformers' forward answers. (Without the guard, warm_up raises.)"""
    from gputui.models.causal_lm import CausalLMRuntime
    from gputui.models.llama_decoder import OwnDecoder

    def broken(*_a: object) -> None:
        raise RuntimeError("a kernel failed")

    monkeypatch.setattr(OwnDecoder, "disagreement", broken)
    rt = CausalLMRuntime.load({"path": str(tiny_causal_lm_path), "max_context": CONTEXT}, [CPU], torch.float32)
    rt.warm_up()
    info = rt.info()
    assert info["decoder"] == "transformers"
    if rt.model.config.model_type != "mistral":  # (Mistral's window refuses it before any check)
        assert info["own_decoder_refusal"] == "RuntimeError: a kernel failed"
    stats = rt.generate({"messages": [{"role": "user", "content": "hi"}],
                         "params": {"max_new_tokens": 3, "temperature": 0, "ignore_stop": True}},
                        lambda *_a, **_k: None, lambda: False)
    assert stats["new_tokens"] == 3 and stats["decoder"] == "transformers"


def test_greedy_run_ahead_ends_where_it_is_told(runtime) -> None:  # noqa: ANN001
    """The greedy path a step ahead of the host (the own decoder): one token when one is asked
    for, a cancel seen after the tokens already sent, and the same words as the step-by-step
    sampled path at temperature 0 would give (the greedy test above)."""
    def reply(max_new: int, stop_after: int | None = None) -> tuple[dict, list[str]]:  # type: ignore[type-arg]
        pieces: list[str] = []
        stats = runtime.generate({"messages": [{"role": "user", "content": "hello"}],
                                  "params": {"max_new_tokens": max_new, "temperature": 0, "ignore_stop": True}},
                                 lambda piece, **_k: pieces.append(piece),
                                 lambda: stop_after is not None and len(pieces) >= stop_after)
        return stats, pieces

    one, _ = reply(1)
    assert one["new_tokens"] == 1 and one["finish"] == "length"
    cut, pieces = reply(20, stop_after=2)
    assert cut["finish"] == "cancelled" and cut["new_tokens"] <= 3 and len(pieces) >= 2
    again, _ = reply(20)
    assert again["new_tokens"] == 20  # the cancelled reply's queued step left nothing behind


def test_stop_tokens_cancel_and_a_long_conversation(runtime) -> None:  # noqa: ANN001
    stop = runtime.tok.tok.convert_tokens_to_ids("<|im_end|>")
    assert stop in runtime.tok.stop_ids
    cancelled = runtime.generate({"messages": [{"role": "user", "content": "hi"}],
                                  "params": {"max_new_tokens": 20, "ignore_stop": True}},
                                 lambda *_a, **_k: None, lambda: True)
    assert cancelled["finish"] == "cancelled" and cancelled["new_tokens"] == 0
    notices: list[str] = []
    long = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} hello world"} for i in range(30)]
    stats = runtime.generate({"messages": long, "params": {"max_new_tokens": 8, "temperature": 0}},
                             lambda piece, **k: notices.append(k.get("notice", "")), lambda: False)
    assert stats["dropped_messages"] > 0 and any("oldest message" in n for n in notices)


def test_remote_code_and_unknown_layer_kinds_are_refused(tiny_causal_lm_path: Path, tmp_path: Path) -> None:
    kind = kind_named("causal-lm")
    check_kind(kind, tiny_causal_lm_path)
    bad = tmp_path / "m"
    shutil.copytree(tiny_causal_lm_path, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModelForCausalLM": "x.Y"}}))
    with pytest.raises(CheckpointError, match="needs its own remote code"):
        check_kind(kind, bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "layer_types": ["full_attention", "linear_attention"]}))
    with pytest.raises(CheckpointError, match="cannot size the KV cache"):
        check_kind(kind, bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt_oss"}))
    with pytest.raises(CheckpointError, match="not causal-lm"):
        check_kind(kind, bad)


def test_a_chatglm3_folder_is_not_a_causal_lm(tiny_chatglm3_path: Path) -> None:
    with pytest.raises(CheckpointError, match="this is a chatglm3 checkpoint, not causal-lm"):
        check_kind(kind_named("causal-lm"), tiny_chatglm3_path)


def test_the_fast_loader_builds_the_model_from_pretrained_builds(tiny_causal_lm_path: Path) -> None:
    """Meta-device model + weights read by fast_load (the GPU path) = transformers' from_pretrained,
    tied head (Qwen2 here) and rotary buffers included."""
    from transformers import AutoModelForCausalLM

    from gputui.models.causal_lm import fast_load

    ours = fast_load(tiny_causal_lm_path, CPU, torch.float32)
    assert ours is not None
    ref = AutoModelForCausalLM.from_pretrained(str(tiny_causal_lm_path), dtype=torch.float32)
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.inference_mode():
        assert torch.allclose(ours(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-5)
    if ref.config.tie_word_embeddings:
        assert ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()


LLAMA_KERNELS_CHILD = """
import json, torch
from transformers import AutoModelForCausalLM
from gputui.models.glm.glm_model import GlmModel, KVCache
from gputui.models.glm.glm_steps import kernel_parts
from gputui.models.llama_decoder import weights_of
cpu = torch.device("cpu")
hf = AutoModelForCausalLM.from_pretrained({path!r}, dtype=torch.float32)
w = weights_of(hf)
s = w.shape
inv = hf.model.rotary_emb.inv_freq.float()
model = GlmModel(w, KVCache(s, 3, 40, cpu, torch.float32), inv_freq=inv)
for slot, n in ((0, 9), (1, 30), (2, 17)):
    model.prefill(slot, torch.arange(5, 5 + n), 0, logits=False)
attend, ops = kernel_parts(s, inv, cpu, rows=3)
saved = model.cache.data.clone()
ids, slots, pos = torch.tensor([40, 41, 42]), torch.tensor([2, 0, 1]), torch.tensor([17, 9, 30])
want = model.decode(ids, slots, pos)
after = model.cache.data.clone()
model.cache.data.copy_(saved)
kernel = GlmModel(w, model.cache, attend, ops, inv_freq=inv)
got = kernel.decode(ids, slots, pos)
errors = [float((got[i] - want[i]).norm() / want[i].norm()) for i in range(3)]
errors.append(float((model.cache.data - after).abs().max()))
print(json.dumps(errors))
"""


def test_the_triton_row_kernels_compute_llamas_rotary_in_the_interpreter(tiny_causal_lm_path: Path) -> None:
    """The rotary kernel's Llama pairing (rotate_half) and the attention over grouped KV heads
    compute what the PyTorch twins compute, row by row, cache writes included."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", LLAMA_KERNELS_CHILD.format(path=str(tiny_causal_lm_path))],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    errors = json.loads(out.stdout.strip().splitlines()[-1])
    assert max(errors) < 1e-5, errors
