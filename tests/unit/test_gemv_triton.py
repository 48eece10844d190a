"""The decode GEMV kernel computes what its PyTorch twin computes, for every fused prologue and
epilogue, on shapes whose rows and columns do not fill the tiles (Triton's interpreter, in a
child process: the interpreter is chosen when the kernel is defined)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CHILD = r"""
import json, torch
from gputui.models.glm.gemv_reference import ADD_TO_OUT, SILU_PAIR, STORE, reference
from gputui.models.glm.gemv_triton import gemv

torch.manual_seed(0)
dt = getattr(torch, {dtype!r})
n, k = 40, 200  # 40 rows: two and a half 16-row tiles; 200 columns: three 64-wide tiles and a bit
cases = {{}}
for name, kw in {{
    "plain": dict(),
    "bias": dict(bias=True),
    "norm+bias": dict(bias=True, norm=True),
    "add": dict(epilogue=ADD_TO_OUT),
    "norm+silu": dict(norm=True, epilogue=SILU_PAIR),
}}.items():
    for config in [(16, 64, 4), (8, 256, 2)]:
        rows = 2 * n if kw.get("epilogue") == SILU_PAIR else n
        w = torch.randn(rows, k, dtype=dt) / k ** 0.5
        x = torch.randn(k, dtype=dt)
        b = torch.randn(n if kw.get("epilogue") != SILU_PAIR else n, dtype=dt) if kw.get("bias") else None
        norm = (torch.rand(k, dtype=dt) + 0.5, 1e-5) if kw.get("norm") else None
        start = torch.randn(n, dtype=dt)
        want = reference(w, x, start.clone(), bias=b, norm=norm, epilogue=kw.get("epilogue", STORE)).float()
        got = gemv(w, x, start.clone(), bias=b, norm=norm, epilogue=kw.get("epilogue", STORE), config=config).float()
        cases[f"{{name}} {{config}}"] = float((got - want).abs().max() / want.abs().max())
print(json.dumps(cases))
"""


@pytest.mark.parametrize("dtype,tolerance", [("float32", 1e-5), ("float16", 4e-3)])
def test_the_gemv_kernel_matches_its_twin_in_the_interpreter(dtype: str, tolerance: float) -> None:
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD.format(dtype=dtype)], capture_output=True, text=True,
                         env=env, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    errors = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(errors) == 10
    assert max(errors.values()) < tolerance, errors


def test_the_input_may_not_be_the_output() -> None:
    pytest.importorskip("triton")
    import torch

    from gputui.models.glm.gemv_reference import ADD_TO_OUT
    from gputui.models.glm.gemv_triton import gemv

    res = torch.zeros(8)
    with pytest.raises(ValueError, match="race"):
        gemv(torch.zeros(8, 8), res, res, epilogue=ADD_TO_OUT)
