"""CUDA's numbering vs nvidia-smi's: the mapping a user needs to avoid the wrong GPU."""

from __future__ import annotations

from gputui.core.cuda_order import GpuIdentity, cuda_indices

A100 = GpuIdentity(0, "GPU-a100", "00000000:18:00.0", (8, 0), 108)
H100 = GpuIdentity(1, "GPU-h100", "00000000:3B:00.0", (9, 0), 132)


def test_pci_bus_id_order_matches_nvidia_smi() -> None:
    assert cuda_indices([A100, H100], None, "PCI_BUS_ID") == {0: 0, 1: 1}


def test_default_order_puts_the_fastest_gpu_first() -> None:
    assert cuda_indices([A100, H100], None, None) == {1: 0, 0: 1}


def test_visible_devices_reorders_and_hides() -> None:
    assert cuda_indices([A100, H100], "1,0", "PCI_BUS_ID") == {1: 0, 0: 1}
    assert cuda_indices([A100, H100], "1", "PCI_BUS_ID") == {1: 0}


def test_visible_devices_by_uuid_prefix() -> None:
    assert cuda_indices([A100, H100], "GPU-h1", "PCI_BUS_ID") == {1: 0}


def test_parsing_stops_at_the_first_invalid_entry_like_cuda() -> None:
    assert cuda_indices([A100, H100], "0,7,1", "PCI_BUS_ID") == {0: 0}
    assert cuda_indices([A100, H100], "", "PCI_BUS_ID") == {}
