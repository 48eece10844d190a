"""Readers of GPU state. One small interface, two implementations:

- `nvml.NvmlTelemetry`: the real machine, through NVML (the only importer of pynvml);
- `simulated.SimulatedServer`: a made-up server for tests and `gputui --demo`.

Nothing here creates a CUDA context: NVML reads the driver's books without one.
"""

from gputui.hardware.base import GpuTelemetry, TelemetryUnavailable

__all__ = ["GpuTelemetry", "TelemetryUnavailable", "open_telemetry"]


def open_telemetry(demo: bool = False) -> GpuTelemetry:
    """The real NVML reader, or the simulated demo server; raises TelemetryUnavailable."""
    if demo:
        from gputui.hardware.simulated import demo_server

        return demo_server()
    from gputui.hardware.nvml import NvmlTelemetry

    return NvmlTelemetry()
