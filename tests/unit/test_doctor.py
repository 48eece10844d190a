"""`gputui doctor --explain`: every catalogue entry is recognised, and tied to the live state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gputui.cli import main
from gputui.core.units import MiB
from gputui.doctor.catalogue import CATALOGUE, match
from gputui.doctor.checks import nv_cache_finding, run_checks
from gputui.doctor.explain import explain
from gputui.hardware.simulated import SimulatedServer, make_gpus

SAMPLES = {
    "cublas_init": "RuntimeError: CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`",
    "cudnn_internal": "RuntimeError: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR",
    "oom": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 1 has a total capacity of 79.18 GiB",
    "device_assert": "RuntimeError: CUDA error: device-side assert triggered",
    "device_mismatch": "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!",
    "fork_reinit": "RuntimeError: Cannot re-initialize CUDA in forked subprocess. To use CUDA with multiprocessing, you must use the 'spawn' start method",
    "invalid_ordinal": "RuntimeError: CUDA error: invalid device ordinal",
    "driver_insufficient": "RuntimeError: The NVIDIA driver on your system is too old... CUDA driver version is insufficient for CUDA runtime version",
    "cublas_execution": "RuntimeError: CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx(...)`",
}


def test_every_catalogue_entry_has_a_sample_here() -> None:
    assert {e.id for e in CATALOGUE} == set(SAMPLES)


@pytest.mark.parametrize("entry_id,text", SAMPLES.items())
def test_each_known_error_is_recognised(entry_id: str, text: str) -> None:
    assert entry_id in [e.id for e in match(text)]


def full_gpu_server() -> SimulatedServer:
    server = SimulatedServer(make_gpus(2))
    g1 = server.gpus[1]
    server.allocate(g1.uuid, 777, g1.total_bytes - 40 * MiB, "bob", "python train.py")
    return server


def test_the_cublas_explanation_names_the_full_gpu_and_a_gpu_with_room() -> None:
    ex = explain(SAMPLES["cublas_init"], full_gpu_server().snapshot())
    text = ex.text()
    assert ex.suspects == [1]
    assert "GPU 1 (GPU-5e1a0000-0000-4000-8000-000000000001) has 40 MiB free" in text
    assert "load it with gputui on GPU 0 or free GPU 1" in text
    assert "pid 777 bob" in text


def test_an_oom_naming_a_gpu_shows_who_holds_it() -> None:
    ex = explain(SAMPLES["oom"], full_gpu_server().snapshot())
    assert ex.suspects == [1] and any("pid 777 bob" in e for e in ex.evidence)


def test_an_unknown_error_says_so() -> None:
    assert not explain("segfault in my own code", full_gpu_server().snapshot()).entries


def test_explain_json_from_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--demo", "--json", "--explain", SAMPLES["invalid_ordinal"]]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["recognised"] and doc["matches"][0]["id"] == "invalid_ordinal"
    assert any("CUDA_VISIBLE_DEVICES" in e for e in doc["evidence"])


def test_checks_flag_a_gpu_too_full_for_a_new_process() -> None:
    findings = run_checks(full_gpu_server().snapshot(), spawn_cuda_check=False)
    errors = [f for f in findings if f.severity == "error"]
    assert len(errors) == 1 and "GPU 1" in errors[0].title
    assert any(f.title.endswith("shared with other users") and "bob" in f.evidence for f in findings)


def test_a_root_owned_nv_cache_is_flagged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    (tmp_path / ".nv" / "ComputeCache").mkdir(parents=True)
    real = os.stat

    def stat(p, *a, **k):  # type: ignore[no-untyped-def]
        st = real(p, *a, **k)
        if str(p).endswith("ComputeCache"):
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, 12345, 0, st.st_size,
                                   int(st.st_atime), int(st.st_mtime), int(st.st_ctime)))
        return st

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(Path, "stat", lambda self, **k: stat(str(self)))
    f = nv_cache_finding(tmp_path)
    assert f.severity == "warning" and "chown" in f.fix


def test_bundle_redacts_other_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tarfile

    from gputui.doctor.bundle import write_bundle

    server = full_gpu_server()
    path = write_bundle(tmp_path / "b.tar.gz", server.snapshot(), [], None)
    with tarfile.open(path) as tar:
        status = json.load(tar.extractfile("gputui-bundle/status.json"))  # type: ignore[arg-type]
        names = tar.getnames()
    proc = status["gpus"][1]["processes"][0]
    assert proc["user"] == "user-1" and proc["command"] == "<redacted>"
    assert "gputui-bundle/versions.json" in names


def test_the_fast_decode_check_names_what_is_missing() -> None:
    from gputui.doctor.checks import decode_finding

    missing = decode_finding({"triton": None, "triton_error": "ModuleNotFoundError: No module named 'triton'"})
    assert missing.severity == "warning" and "No module named" in missing.evidence and "120" in missing.fix
    no_cc = decode_finding({"triton": "3.6.0", "cc": None})
    assert no_cc.severity == "warning" and "C compiler" in no_cc.evidence
    fine = decode_finding({"triton": "3.6.0", "cc": "/usr/bin/cc"})
    assert fine.severity == "ok" and "3.6.0" in fine.evidence


def test_doctor_says_when_the_fused_decode_is_off_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from gputui.doctor.checks import fast_decode_finding

    monkeypatch.setenv("GPUTUI_FUSED_DECODE", "0")
    f = fast_decode_finding()
    assert f.title == "fused decode off" and "GPUTUI_FUSED_DECODE=0" in f.evidence
    monkeypatch.delenv("GPUTUI_FUSED_DECODE")
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "3.0.0" if name == "triton" else real(name))
    f = fast_decode_finding()
    assert f.severity == "warning" and "older than 3.3" in f.evidence

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert "triton is not installed" in fast_decode_finding().evidence
