"""The NVML reader against a fake pynvml that raises the real NVML exception types."""

from __future__ import annotations

import os

import pynvml  # noqa: TID251 - the real exception types
import pytest

from gputui.hardware.base import TelemetryUnavailable
from gputui.hardware.nvml import NvmlTelemetry
from tests.fakes.fake_pynvml import FakeDevice, FakeProc, MiB, make_fake_nvml


def two_gpus() -> list[FakeDevice]:
    return [
        FakeDevice("GPU-aaaa", "00000000:18:00.0", used=1000 * MiB,
                   compute=[FakeProc(os.getpid(), 1000 * MiB)]),
        FakeDevice("GPU-bbbb", "00000000:2A:00.0", used=0),
    ]


def test_memory_matches_nvidia_smi_by_reading_the_v2_struct() -> None:
    """v1 'used' counts ~480 MiB of driver-reserved memory; nvidia-smi and we must not."""
    t = NvmlTelemetry(make_fake_nvml(two_gpus()))
    snap = t.snapshot()
    assert snap.gpus[0].used_bytes == 1000 * MiB
    assert snap.gpus[1].used_bytes == 0
    assert snap.gpus[1].free_bytes == 81559 * MiB


def test_not_supported_fields_read_as_none_and_are_named() -> None:
    devs = two_gpus()
    devs[0].fail = {"power": pynvml.NVMLError_NotSupported, "temperature": pynvml.NVMLError_NoPermission}
    snap = NvmlTelemetry(make_fake_nvml(devs)).snapshot()
    g = snap.gpus[0]
    assert g.power_w is None and g.temperature_c is None
    assert set(g.unavailable) == {"power", "temperature"}
    assert g.used_bytes == 1000 * MiB and g.error is None


def test_a_lost_gpu_is_marked_and_the_others_still_read() -> None:
    devs = two_gpus()
    fake = make_fake_nvml(devs)
    t = NvmlTelemetry(fake)
    t.snapshot()  # learns the identities while the GPU is healthy
    devs[0].fail = {"memory": pynvml.NVMLError_GpuIsLost}
    snap = t.snapshot()
    assert snap.gpus[0].error is not None and "lost" in snap.gpus[0].error
    assert snap.gpus[0].uuid == "GPU-aaaa"  # still named, so the user knows which one
    assert snap.gpus[1].error is None and snap.gpus[1].total_bytes == 81559 * MiB


def test_no_permission_on_the_whole_gpu_marks_it() -> None:
    devs = two_gpus()
    devs[1].fail = {"handle": pynvml.NVMLError_NoPermission}
    snap = NvmlTelemetry(make_fake_nvml(devs)).snapshot()
    assert snap.gpus[1].error == "no permission to read this GPU"
    assert snap.gpus[0].error is None


def test_missing_driver_is_one_line_pointing_at_the_demo() -> None:
    with pytest.raises(TelemetryUnavailable) as e:
        NvmlTelemetry(make_fake_nvml([], init_error=pynvml.NVMLError_LibraryNotFound))
    assert "gputui --demo" in str(e.value) and "\n" not in str(e.value)


def test_processes_carry_user_command_and_memory() -> None:
    snap = NvmlTelemetry(make_fake_nvml(two_gpus())).snapshot()
    (p,) = snap.gpus[0].processes
    assert p.pid == os.getpid() and p.used_bytes == 1000 * MiB
    assert p.user and p.command and "python" in p.command.lower() or "pytest" in (p.command or "")


def test_unknown_process_memory_reads_as_none_not_a_huge_number() -> None:
    devs = two_gpus()
    devs[1].compute = [FakeProc(999999, None), FakeProc(999998, (1 << 64) - 1)]
    snap = NvmlTelemetry(make_fake_nvml(devs)).snapshot()
    assert [p.used_bytes for p in snap.gpus[1].processes] == [None, None]
    assert all(p.user is None for p in snap.gpus[1].processes)  # pid not in our namespace


def test_cuda_index_follows_pci_order_and_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    snap = NvmlTelemetry(make_fake_nvml(two_gpus())).snapshot()
    assert snap.gpus[0].cuda_index_pci is None
    assert snap.gpus[1].cuda_index_pci == 0


def test_a_process_from_outside_this_container_reads_as_unknown_with_a_hint() -> None:
    """Fault 7: NVML reports host pids that do not exist in our pid namespace."""
    from gputui.doctor.checks import gpu_findings

    devs = two_gpus()
    devs[1].compute = [FakeProc(987654, 5000 * MiB)]  # no such pid here
    snap = NvmlTelemetry(make_fake_nvml(devs)).snapshot()
    (p,) = snap.gpus[1].processes
    assert p.pid == 987654 and p.used_bytes == 5000 * MiB and p.user is None
    hints = [f for f in gpu_findings(snap) if "outside this container" in f.title]
    assert hints and "987654" in hints[0].evidence
