"""gputui's own GLM (glm_model) computes what transformers' GlmForCausalLM computes, on the same
checkpoint: the prefill's logits and cache, and a batched decode step whose rows sit in
different slots at different positions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import StaticCache

from gputui.core.checkpoint_info import CheckpointError
from gputui.models.common.hf import cache_keyword
from gputui.models.glm.chatglm3 import load_chatglm3
from gputui.models.glm.glm_model import GlmModel, KVCache, assemble, load_glm, shape_of

CPU = torch.device("cpu")


def hf_logits(model, ids: list[int], more: list[int]) -> list[torch.Tensor]:  # noqa: ANN001
    """transformers' logits after the prompt, then after each of `more` fed one by one."""
    cache = StaticCache(config=model.config, max_cache_len=96)
    kw = {cache_keyword(model): cache, "use_cache": True}
    with torch.inference_mode():
        out = [model(input_ids=torch.tensor([ids]), cache_position=torch.arange(len(ids)), **kw).logits[0, -1]]
        for i, t in enumerate(more):
            pos = torch.tensor([len(ids) + i])
            out.append(model(input_ids=torch.tensor([[t]]), cache_position=pos, **kw).logits[0, -1])
    return [o.float() for o in out]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_prefill_in_chunks_and_batched_decode_match_transformers(tiny_chatglm3_path: Path) -> None:
    hf = load_chatglm3(tiny_chatglm3_path, "cpu", torch.float32)
    w = load_glm(tiny_chatglm3_path, CPU, torch.float32)
    torch.manual_seed(0)
    prompts = [torch.randint(5, 600, (n,)).tolist() for n in (23, 5, 40)]
    more = [[7, 9, 11], [13, 15, 17], [19, 21, 23]]
    want = [hf_logits(hf, p, m) for p, m in zip(prompts, more, strict=True)]
    model = GlmModel(w, KVCache(w.shape, 4, 96, CPU, torch.float32))
    # three streams in slots 3, 0 and 2; the first prompt prefilled in two chunks
    slots = [3, 0, 2]
    got0 = []
    for p, slot in zip(prompts, slots, strict=True):
        half = len(p) // 2
        model.prefill(slot, torch.tensor(p[:half]), 0, logits=False)
        got0.append(model.prefill(slot, torch.tensor(p[half:]), half))
    for g, wl in zip(got0, want, strict=True):
        assert g is not None and rel(g, wl[0]) < 1e-5
    for step in range(3):
        ids = torch.tensor([m[step] for m in more])
        pos = torch.tensor([len(p) + step for p in prompts])
        logits = model.decode(ids, torch.tensor(slots), pos)
        for row in range(3):
            assert rel(logits[row], want[row][step + 1]) < 1e-5, (step, row)


def test_a_row_of_a_batch_is_what_it_is_alone(tiny_chatglm3_path: Path) -> None:
    """A stream's logits do not depend on the other rows of its batch."""
    w = load_glm(tiny_chatglm3_path, CPU, torch.float32)
    model = GlmModel(w, KVCache(w.shape, 3, 64, CPU, torch.float32))
    for slot, n in ((0, 9), (1, 30), (2, 17)):
        model.prefill(slot, torch.arange(5, 5 + n), 0, logits=False)
    cache_before = model.cache.data.clone()
    together = model.decode(torch.tensor([40, 41, 42]), torch.tensor([0, 1, 2]), torch.tensor([9, 30, 17]))
    model.cache.data.copy_(cache_before)
    alone = model.decode(torch.tensor([41]), torch.tensor([1]), torch.tensor([30]))
    assert torch.allclose(together[1], alone[0], atol=1e-6)


def test_prompts_prefilled_together_are_prefilled_as_alone(tiny_chatglm3_path: Path) -> None:
    """prefill_many: three prompts' chunks in one forward (one a second chunk, at an offset) give
    each the logits and cache it gets alone."""
    from gputui.models.glm.glm_model import Segment

    w = load_glm(tiny_chatglm3_path, CPU, torch.float32)
    model = GlmModel(w, KVCache(w.shape, 3, 64, CPU, torch.float32))
    model.prefill(2, torch.arange(5, 15), 0, logits=False)  # slot 2 holds a first chunk already
    base = model.cache.data.clone()
    parts = [(0, torch.arange(20, 31), 0), (1, torch.arange(40, 43), 0), (2, torch.arange(50, 57), 10)]
    alone = []
    for slot, ids, start in parts:
        alone.append(model.prefill(slot, ids, start))
    cache_alone = model.cache.data.clone()
    model.cache.data.copy_(base)
    together = model.prefill_many([Segment(slot, ids, start, logits=slot != 1) for slot, ids, start in parts])
    assert together[1] is None
    for i in (0, 2):
        assert rel(together[i], alone[i]) < 1e-5  # type: ignore[arg-type]
    assert torch.allclose(model.cache.data, cache_alone, atol=1e-5)
    # new prompts only (the block-masked path): the same again
    model.cache.data.zero_()
    fresh = [(0, torch.arange(20, 31)), (1, torch.arange(40, 43)), (2, torch.arange(60, 62))]
    alone = [model.prefill(slot, ids, 0) for slot, ids in fresh]
    cache_alone = model.cache.data.clone()
    model.cache.data.zero_()
    together = model.prefill_many([Segment(slot, ids, 0) for slot, ids in fresh])
    for got, want in zip(together, alone, strict=True):
        assert rel(got, want) < 1e-5  # type: ignore[arg-type]
    assert torch.allclose(model.cache.data, cache_alone, atol=1e-5)


def test_a_checkpoint_that_does_not_match_its_config_is_refused(tiny_chatglm3_path: Path) -> None:
    from gputui.models.common.weights import iter_tensors

    shape = shape_of(tiny_chatglm3_path)
    tensors = dict(iter_tensors(tiny_chatglm3_path))
    name = "transformer.encoder.layers.1.mlp.dense_4h_to_h.weight"
    with pytest.raises(CheckpointError, match="missing weights layer 1 wd"):
        assemble(shape, [(n, t) for n, t in tensors.items() if n != name], "ckpt")
    wrong = {**tensors, name: tensors[name][:, :-1]}
    with pytest.raises(CheckpointError, match="wd of layer 1 has shape"):
        assemble(shape, wrong.items(), "ckpt")
    with pytest.raises(CheckpointError, match="unexpected tensor"):
        assemble(shape, [*tensors.items(), ("transformer.encoder.layers.9.mlp.dense_4h_to_h.weight", tensors[name])],
                 "ckpt")


def test_the_glm_worker_modules_do_not_import_transformers() -> None:
    """A ChatGLM3 worker imports its runtime module up front: that must not pull transformers
    (10.9 s of a cold launch on the H200 machine)."""
    import subprocess
    import sys

    code = ("import sys; import gputui.models.glm.glm_runtime, gputui.worker.loading, gputui.worker.warmup; "
            "print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


BATCH_CHILD = """
import json, torch
from gputui.models.glm.glm_model import GlmModel, KVCache, load_glm
from gputui.models.glm.glm_decode import GlmDecodeStep
from gputui.models.glm.glm_steps import kernel_parts
cpu = torch.device("cpu")
w = load_glm({path!r}, cpu, torch.float32)
s = w.shape
model = GlmModel(w, KVCache(s, 3, 64, cpu, torch.float32))
for slot, n in ((0, 9), (1, 30), (2, 17)):
    model.prefill(slot, torch.arange(5, 5 + n), 0, logits=False)
attend, ops = kernel_parts(s, model.inv_freq, cpu, rows=4)
saved = model.cache.data.clone()
ids, slots, pos = torch.tensor([40, 41, 42]), torch.tensor([2, 0, 1]), torch.tensor([17, 9, 30])
want = model.decode(ids, slots, pos)
after = model.cache.data.clone()
model.cache.data.copy_(saved)
kernel = GlmModel(w, model.cache, attend, ops)
# a fourth row of padding (position -1) changes nothing for the others
got = kernel.decode(torch.cat([ids, torch.tensor([0])]), torch.cat([slots, torch.tensor([0])]),
                    torch.cat([pos, torch.tensor([-1])]))
errors = [float((got[i] - want[i]).norm() / want[i].norm()) for i in range(3)]
errors.append(float((model.cache.data[:, :, :, :, :63] - after[:, :, :, :, :63]).abs().max()))
# the fused one-stream step over slot 1 of the same cache
model.cache.data.copy_(saved)
slot = torch.tensor([1])
step = GlmDecodeStep(w, model.cache.k, model.cache.v, cpu, backend="triton", slot=slot)
one = step(torch.tensor([[42]]), torch.tensor([30]))
errors.append(float((one - want[2]).norm() / want[2].norm()))
print(json.dumps(errors))
"""


def test_the_batch_attention_kernel_and_the_slotted_fused_step_in_the_interpreter(tiny_chatglm3_path: Path) -> None:
    """The batch's Triton kernels (norm, rotary and cache writes, attention, SiLU) compute what
    their PyTorch twins compute: each row in its own slot at its own position; a padding row
    (position -1) writes and reads nothing; the fused step writes and reads the slot it is given."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", BATCH_CHILD.format(path=str(tiny_chatglm3_path))],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    errors = json.loads(out.stdout.strip().splitlines()[-1])
    assert max(errors) < 1e-5, errors
