"""The NVML reader against a fake pynvml that raises the real NVML exception types."""

from __future__ import annotations

import os

import pynvml  # noqa: TID251 - the real exception types
import pytest

from gputui.hardware.base import TelemetryUnavailable
from gputui.hardware.nvml import NvmlTelemetry
from tests.fakes.fake_pynvml import Driver, FakeDevice, FakeProc, MiB, make_fake_nvml


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


# -- drivers and bindings that do not match (each named after the report that found it) ----------

def with_a_process() -> list[FakeDevice]:
    devs = two_gpus()
    devs[1].compute = [FakeProc(4321, 2000 * MiB)]
    return devs


def read_with(driver: Driver, devs: list[FakeDevice] | None = None):  # type: ignore[no-untyped-def]
    return NvmlTelemetry(make_fake_nvml(devs or with_a_process(), driver=driver)).snapshot()


def test_a_driver_without_v3_under_nvidia_ml_py_13_still_lists_processes() -> None:
    """The unversioned call raises NVMLLibraryMismatchError, which is not an NVMLError: it once
    escaped snapshot() (a traceback in `gputui status`, no GPU in the dashboard)."""
    snap = read_with(Driver(lacks=frozenset({"v3"})))
    assert snap.error is None and all(g.error is None for g in snap.gpus)
    assert [(p.pid, p.used_bytes) for p in snap.gpus[1].processes] == [(4321, 2000 * MiB)]


def test_driver_440_without_v2_marks_only_the_process_list_unavailable() -> None:
    """pynvml #43, k8s-device-plugin #331: driver 430/440 has neither _v2 nor _v3."""
    for binding in ("13", "11"):
        snap = read_with(Driver(lacks=frozenset({"v3", "v2"}), binding=binding))
        g = snap.gpus[1]
        assert g.error is None and g.used_bytes is not None
        assert g.processes == () and "compute_processes" in g.unavailable


def test_r525_answering_v3_in_another_layout_falls_back_to_v2() -> None:
    """nvitop #181: pids out of range from the v3 call; the v2 answer is the right one."""
    snap = read_with(Driver(garbled_v3=True))
    assert [p.pid for p in snap.gpus[1].processes] == [4321]


def test_nvidia_ml_py_11_without_v3_names_reads_through_v2() -> None:
    snap = read_with(Driver(binding="11"))
    assert [p.pid for p in snap.gpus[1].processes] == [4321]


def test_a_missing_entry_point_for_one_field_marks_the_field_not_the_gpu() -> None:
    """Older drivers lack newer queries (MIG mode before R450): FunctionNotFound is an NVMLError,
    and it once marked the whole GPU lost."""
    snap = read_with(Driver(lacks=frozenset({"mig_mode", "persistence"})))
    g = snap.gpus[0]
    assert g.error is None and g.mig_enabled is None and {"mig_mode", "persistence"} <= set(g.unavailable)
    assert g.used_bytes == 1000 * MiB


def test_a_driver_before_the_v2_memory_struct_reads_v1() -> None:
    snap = read_with(Driver(lacks=frozenset({"memory_v2"})))
    assert snap.gpus[0].total_bytes == two_gpus()[0].total and snap.gpus[0].error is None


def test_any_exception_from_a_binding_stays_inside_the_snapshot() -> None:
    devs = with_a_process()
    devs[0].fail = {"handle": RuntimeError}  # a binding's own bug, of no NVML type
    fake = make_fake_nvml(devs)
    snap = NvmlTelemetry(fake).snapshot()
    assert snap.gpus[0].error and snap.gpus[1].error is None
    fake.nvmlDeviceGetCount = lambda: (_ for _ in ()).throw(ValueError("bad"))
    assert NvmlTelemetry(fake).snapshot().error == "NVML: bad"
