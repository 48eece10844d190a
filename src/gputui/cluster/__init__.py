"""Workers on an existing Ray cluster, for when one machine is not enough.

Ray places and runs; gputui decides and checks. Ray's GPU resources are logical (it enforces no
memory and sees no other user's process), so placement stays gputui's, on each node's real NVML
readings (a NodeProbe actor per node, which never creates a CUDA context); a model's worker is a
Ray actor pinned to the chosen node (node affinity) that runs the same worker code in the same
fixed order, with the protocol over actor calls instead of pipes.

Ray is optional: `pip install 'gputui[ray]'`. `require_ray()` says so in one line.
"""

from __future__ import annotations

from typing import Any


class RayMissing(RuntimeError):
    pass


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayMissing("--ray needs Ray: pip install 'gputui[ray]'") from None
    return ray
