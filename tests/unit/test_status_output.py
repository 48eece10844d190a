"""`gputui status` and `status --json` on the simulated server."""

from __future__ import annotations

import json

import pytest

from gputui.cli import main
from gputui.core.memory import NEW_PROCESS_FIRST_MATMUL_BYTES
from gputui.core.snapshot import STATUS_SCHEMA_VERSION, snapshot_to_json
from gputui.core.status_table import status_text
from gputui.core.units import MiB
from gputui.hardware.simulated import SimulatedServer, demo_server, make_gpus


def test_status_json_schema_on_the_demo_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json", "--demo"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == STATUS_SCHEMA_VERSION and doc["simulated"] is True
    g0, g1 = doc["gpus"]
    assert set(g0) >= {"index", "cuda_index", "uuid", "pci_bus_id", "name", "memory", "processes"}
    assert g1["memory"]["used_bytes"] == 30 * 1024 * MiB
    assert g1["processes"][0] == {
        "pid": 4242, "kind": "compute", "used_bytes": 30 * 1024 * MiB, "user": "alice",
        "command": "python train.py --bs 64", "ours": False, "model": None,
    }
    assert g0["memory"]["free_bytes"] - g0["memory"]["headroom_bytes"] == NEW_PROCESS_FIRST_MATMUL_BYTES


def test_status_table_names_every_gpu_and_says_simulated(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--demo"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("SIMULATED")
    assert "GPU-5e1a0000-0000-4000-8000-000000000000" in out and "alice" in out


def test_a_nearly_full_gpu_is_flagged_in_the_table() -> None:
    server = SimulatedServer(make_gpus(1))
    g = server.gpus[0]
    server.allocate(g.uuid, 7, g.total_bytes - 40 * MiB, "bob", "hog")
    text = status_text(server.snapshot())
    assert "CUBLAS_STATUS_ALLOC_FAILED / NOT_INITIALIZED" in text
    doc = snapshot_to_json(server.snapshot())
    assert doc["gpus"][0]["memory"]["first_matmul_would_fail"] is True


def test_status_without_a_driver_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from gputui.hardware import nvml

    def no_driver(self, nvml_module=None):  # type: ignore[no-untyped-def]
        from gputui.hardware.base import TelemetryUnavailable
        raise TelemetryUnavailable("no NVIDIA driver found (NVML: test); try `gputui --demo`")

    monkeypatch.setattr(nvml.NvmlTelemetry, "__init__", no_driver)
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gputui --demo" in err


def test_demo_server_reports_a_foreign_process() -> None:
    snap = demo_server().snapshot()
    assert snap.simulated and any(p.user == "alice" for g in snap.gpus for p in g.processes)


def test_ps_shows_slots_in_use_and_requests_waiting() -> None:
    """`gputui ps` SLOTS: replies being answered of the model's slots, and those waiting beyond."""
    from gputui.api.views import ModelState, ModelView
    from gputui.cli.server import _ps_json, _slots
    from gputui.core.placement import GpuShare
    from gputui.core.requests import ModelRequest

    req = ModelRequest("glm", "chatglm3", "/m", max_batch=8)
    one_gpu = (GpuShare(0, "GPU-a", 1 << 30, 1 << 29),)
    batching = ModelView(req, ModelState.READY, "ready", one_gpu, runtime={"max_batch": 8}, in_use=3)
    assert _slots(batching) == "3/8" and _ps_json(batching)["slots"] == 8
    full = ModelView(req, ModelState.READY, "ready", one_gpu, runtime={"max_batch": 8}, in_use=10)
    assert _slots(full) == "8/8 +2" and _ps_json(full)["waiting"] == 2
    single = ModelView(ModelRequest("b", "blip2", "/m"), ModelState.READY, "ready", one_gpu, in_use=2)
    assert _slots(single) == "1/1 +1"
    back = ModelView.from_json(batching.to_json())
    assert back.in_use == 3 and back.slots == 8
