"""The hand-fused decode step computes what transformers' GlmForCausalLM computes.

Each test prefills a prompt through the model's own forward, then decodes a few tokens twice
from the same cache state: once with the stock forward, once with the fused step. The Triton
kernels run on the CPU through Triton's interpreter (in a child process, since the
interpreter is chosen when the kernels are defined). Triton 3.9's interpreter gets bf16
matmuls wrong (a 16x16 bf16 tl.dot was off by 1e10), so the kernels are checked in float32
and float16 here; the worker checks bf16 on the real GPU before using the step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import StaticCache

from gputui.models.common.hf import cache_keyword
from gputui.models.glm.chatglm3 import load_chatglm3
from gputui.models.glm.gemv_reference import SILU_PAIR
from gputui.models.glm.glm_decode import FusedDecodeUnsupported, GlmDecodeStep, joint_rows

PROMPT = 37
TOKENS = [7, 9, 11, 13, 15]


def compare(path: Path, dtype: torch.dtype, backend: str, ranges: list[range] | None = None) -> list[float]:
    """Relative L2 error of the fused step's logits, per decoded token (`ranges`: run as the
    stages of a split model, here all on the CPU)."""
    torch.manual_seed(0)
    model = load_chatglm3(path, device="cpu", dtype=dtype)
    cache = StaticCache(config=model.config, max_cache_len=96)
    ids = torch.randint(5, 100, (1, PROMPT))
    errors = []
    with torch.inference_mode():
        model(input_ids=ids, **{cache_keyword(model): cache}, cache_position=torch.arange(PROMPT), use_cache=True)
        saved = [(lay.keys.clone(), lay.values.clone()) for lay in cache.layers]
        want = []
        for i, t in enumerate(TOKENS):
            out = model(input_ids=torch.tensor([[t]]), **{cache_keyword(model): cache},
                        cache_position=torch.tensor([PROMPT + i]), use_cache=True)
            want.append(out.logits[0, -1].float())
        stock_cache = [(lay.keys.clone(), lay.values.clone()) for lay in cache.layers]
        for lay, (k, v) in zip(cache.layers, saved, strict=True):
            lay.keys.copy_(k)
            lay.values.copy_(v)
        step = GlmDecodeStep.from_hf(model, cache, torch.device("cpu"), backend=backend, ranges=ranges)
        for i, t in enumerate(TOKENS):
            got = step(torch.tensor([[t]]), torch.tensor([PROMPT + i])).float()
            errors.append(float((got - want[i]).norm() / want[i].norm()))
        # the fused step wrote the same keys and values into the cache as the stock forward
        for lay, (k, v) in zip(cache.layers, stock_cache, strict=True):
            n = PROMPT + len(TOKENS)
            errors.append(float((lay.keys[..., :n, :] - k[..., :n, :]).abs().max()))
            errors.append(float((lay.values[..., :n, :] - v[..., :n, :]).abs().max()))
    return errors


def test_torch_backend_matches_the_stock_forward_in_float32(tiny_chatglm3_path: Path) -> None:
    errors = compare(tiny_chatglm3_path, torch.float32, "torch")
    assert max(errors) < 1e-5, errors


def test_a_split_model_runs_the_fused_step_stage_by_stage(tiny_chatglm3_path: Path) -> None:
    """Two stages hand the residual stream on; logits and cache writes match the stock forward."""
    errors = compare(tiny_chatglm3_path, torch.float32, "torch", ranges=[range(0, 1), range(1, 2)])
    assert max(errors) < 1e-5, errors


def test_each_stage_works_on_its_own_device(tmp_path: Path) -> None:
    """Meta stands for the second GPU: the step's buffers, rotary table and positions for a
    stage must be on that stage's device, or the step raises."""
    from gputui.models.tiny import build_chatglm3

    build_chatglm3(tmp_path, num_layers=3)
    cpu, meta = torch.device("cpu"), torch.device("meta")
    model = load_chatglm3(tmp_path, "cpu", torch.float32, layer_devices=[cpu, meta, meta])
    cache = StaticCache(config=model.config, max_cache_len=32)
    with torch.inference_mode():
        model(input_ids=torch.tensor([[5, 6, 7]]), **{cache_keyword(model): cache}, cache_position=torch.arange(3),
              use_cache=True)
        step = GlmDecodeStep.from_hf(model, cache, cpu, backend="torch", ranges=[range(0, 1), range(1, 3)])
        assert [st.device for st in step.stages] == [cpu, meta] and step.stages[1].res.device == meta
        assert step(torch.tensor([[9]]), torch.tensor([3])).device == meta
    with pytest.raises(FusedDecodeUnsupported, match="one device"):
        GlmDecodeStep.from_hf(model, cache, cpu, backend="torch", ranges=[range(0, 2), range(2, 3)])


def test_torch_backend_matches_in_bfloat16(tiny_chatglm3_path: Path) -> None:
    errors = compare(tiny_chatglm3_path, torch.bfloat16, "torch")
    assert max(errors[: len(TOKENS)]) < 2e-2, errors


def test_a_wrong_weight_is_caught(tiny_chatglm3_path: Path) -> None:
    """The comparison can fail: swapping two layers' MLPs in the fused step shows up."""
    model = load_chatglm3(tiny_chatglm3_path, device="cpu", dtype=torch.float32)
    cache = StaticCache(config=model.config, max_cache_len=64)
    with torch.inference_mode():
        model(input_ids=torch.tensor([[5, 6, 7]]), **{cache_keyword(model): cache}, cache_position=torch.arange(3),
              use_cache=True)
        step = GlmDecodeStep.from_hf(model, cache, torch.device("cpu"), backend="torch")
        good = step(torch.tensor([[9]]), torch.tensor([3])).clone()
        step.layers[0].wd, step.layers[1].wd = step.layers[1].wd, step.layers[0].wd
        bad = step(torch.tensor([[9]]), torch.tensor([3]))
    from gputui.models.glm.chatglm3_runtime import FUSED_TOLERANCE

    assert float((bad - good).norm() / good.norm()) > FUSED_TOLERANCE


def test_qkv_is_one_matmul_over_the_checkpoint_block(tiny_chatglm3_path: Path) -> None:
    """ChatGLM3 stores q, k and v as one tensor: the loaded weights stay views of it, so the
    fused step multiplies once, with no copy."""
    model = load_chatglm3(tiny_chatglm3_path, device="cpu", dtype=torch.float32)
    a = model.model.layers[0].self_attn
    block = joint_rows([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
    assert block is not None and block.data_ptr() == a.q_proj.weight.data_ptr()
    assert torch.equal(block, torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
    assert joint_rows([a.k_proj.weight, a.q_proj.weight]) is None  # not back to back


def test_the_cache_must_exist_first(tiny_chatglm3_path: Path) -> None:
    model = load_chatglm3(tiny_chatglm3_path, device="cpu", dtype=torch.float32)
    cache = StaticCache(config=model.config, max_cache_len=64)
    with pytest.raises(FusedDecodeUnsupported, match="prefill first"):
        GlmDecodeStep.from_hf(model, cache, torch.device("cpu"), backend="torch")


CHILD = """
import json, sys, torch
sys.path.insert(0, {tests!r})
from unit.test_glm_decode import compare
from pathlib import Path
ranges = [range(0, 1), range(1, 2)] if {split!r} else None
print(json.dumps(compare(Path({path!r}), getattr(torch, {dtype!r}), "triton", ranges)))
"""


@pytest.mark.parametrize("dtype,tolerance,split", [("float32", 1e-5, False), ("float16", 5e-3, False),
                                                  ("float32", 1e-5, True)])
def test_triton_kernels_match_in_the_interpreter(tiny_chatglm3_path: Path, dtype: str, tolerance: float,
                                                 split: bool) -> None:
    pytest.importorskip("triton")
    tests = str(Path(__file__).resolve().parents[1])
    code = CHILD.format(tests=tests, path=str(tiny_chatglm3_path), dtype=dtype, split=split)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    errors = json.loads(out.stdout.strip().splitlines()[-1])
    assert max(errors[: len(TOKENS)]) < tolerance, errors
    assert max(errors[len(TOKENS):]) < (1e-5 if dtype == "float32" else 2e-3), errors


def _runtime(path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN202
    from gputui.models.glm import glm_decode
    from gputui.models.glm.chatglm3_runtime import ChatGLM3Runtime

    monkeypatch.setattr(glm_decode, "triton_available", lambda: True)  # the CPU runs the torch twin

    rt = ChatGLM3Runtime.load({"path": str(path), "max_context": 128}, [torch.device("cpu")], torch.float32)
    rt.warm_up()
    return rt


def test_the_worker_checks_the_fused_step_before_using_it(tiny_chatglm3_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    rt = _runtime(tiny_chatglm3_path, monkeypatch)
    assert rt._fused_step() is not None and rt.fused_check is not None and rt.fused_check < 1e-4
    # a fused step that computes something else is refused, and the reason is reported
    real = GlmDecodeStep._linear

    def no_silu(self, x, w, out, **kw):  # noqa: ANN001, ANN202 - the gate/up GEMV forgets the SiLU
        if kw.get("epilogue") == SILU_PAIR:
            return out.copy_(torch.nn.functional.linear(x, w)[: out.numel()])
        return real(self, x, w, out, **kw)

    monkeypatch.setattr(GlmDecodeStep, "_linear", no_silu)
    assert rt._fused_step() is None
    assert "disagrees with the stock forward" in (rt.fused_error or "")
    assert rt.info()["fused_error"] == rt.fused_error


def test_the_fused_step_can_be_turned_off(tiny_chatglm3_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTUI_FUSED_DECODE", "0")
    rt = _runtime(tiny_chatglm3_path, monkeypatch)
    assert rt._fused_step() is None and "GPUTUI_FUSED_DECODE=0" in (rt.fused_error or "")


PRECOMPILE = """
import torch
from gputui.models.glm.glm_model import shape_of
from gputui.models.glm.glm_triton import precompile
shape = shape_of({path!r})
precompile(shape, torch.device("cpu"), torch.float32, max_len=64)
precompile(shape, torch.device("cpu"), torch.float32, max_len=64, slotted=True)
print("ok")
"""


def test_precompile_launches_every_kernel_with_real_arguments(tiny_chatglm3_path: Path) -> None:
    """The worker's kernel warm-up (threads, one per kernel) runs through the interpreter."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", PRECOMPILE.format(path=str(tiny_chatglm3_path))],
                         capture_output=True, text=True, env=env, timeout=240)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_a_split_worker_checks_its_staged_fused_step(tiny_chatglm3_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gputui.models.glm import glm_decode
    from gputui.models.glm.chatglm3_runtime import ChatGLM3Runtime

    monkeypatch.setattr(glm_decode, "triton_available", lambda: True)  # the CPU runs the torch twin
    cpu = torch.device("cpu")
    rt = ChatGLM3Runtime.load({"path": str(tiny_chatglm3_path), "max_context": 128, "layer_split": [[0, 1], [1, 2]]},
                              [cpu, cpu], torch.float32)
    rt.warm_up()
    step = rt._fused_step()
    assert step is not None and len(step.stages) == 2
    assert rt.fused_check is not None and rt.fused_check < 1e-4
    assert rt.decode_note() == "split over 2 GPUs (layers 0-0 | 1-1); decodes eagerly (no CUDA graph on this device)"


def test_gputuis_own_runtime_checks_the_slotted_fused_step_too(tiny_chatglm3_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """glm_runtime (the default ChatGLM3 runtime) checks the fused step over its cache of slots
    against its own plain step, and refuses one that computes something else."""
    from gputui.models.glm import glm_decode
    from gputui.models.glm.glm_runtime import GlmRuntime

    monkeypatch.setattr(glm_decode, "triton_available", lambda: True)  # the CPU runs the torch twin
    rt = GlmRuntime.load({"path": str(tiny_chatglm3_path), "max_context": 128, "max_batch": 2},
                         [torch.device("cpu")], torch.float32)
    rt.warm_up()
    assert rt.steps is not None and rt.engine is not None
    model = rt.steps.model
    assert rt._fused_step(model) is not None and rt.fused_check is not None and rt.fused_check < 1e-4
    real = GlmDecodeStep._linear

    def no_silu(self, x, w, out, **kw):  # noqa: ANN001, ANN202
        if kw.get("epilogue") == SILU_PAIR:
            return out.copy_(torch.nn.functional.linear(x, w)[: out.numel()])
        return real(self, x, w, out, **kw)

    monkeypatch.setattr(GlmDecodeStep, "_linear", no_silu)
    assert rt._fused_step(model) is None and "disagrees with the plain step" in (rt.fused_error or "")
    rt.engine.close()
