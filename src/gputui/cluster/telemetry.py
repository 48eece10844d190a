"""Every node's GPUs as one picture: a NodeProbe actor on each live node reads its own NVML (or
its simulated GPUs); the snapshots are merged with the host named on every GPU and the indices
numbered across the cluster. A node that dies keeps its GPUs on screen, marked lost, and
placement never picks them; the other nodes keep updating. A lost head (cluster/head.py) marks
every node lost at once, and Ray is asked nothing more.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from gputui.cluster.head import HeadWatch, bounded
from gputui.core.placement import host_matches
from gputui.core.snapshot import GpuSnapshot, ServerSnapshot, snapshot_from_json

HOST_RESOURCE = "gputui-host:"  # a node started with {"gputui-host:NAME": 1} is shown as NAME
PROBE_TIMEOUT_S = 5.0


class ClusterTelemetry:
    def __init__(self, ray: Any, simulated_gpus: int = 0, head: HeadWatch | None = None) -> None:
        self.ray = ray
        self.head = head or HeadWatch(ray.get_runtime_context().gcs_address)
        self.simulated_gpus = simulated_gpus
        self.backend = "simulated" if simulated_gpus else "ray"
        self._probes: dict[str, Any] = {}  # node id -> NodeProbe actor
        self._names: dict[str, str] = {}  # node id -> host name shown
        self._uuid_node: dict[str, str] = {}  # GPU uuid -> node id
        self._last: dict[str, tuple[GpuSnapshot, ...]] = {}  # node id -> its GPUs when last seen
        self._lost: set[str] = set()
        self._refresh_nodes()

    # -- nodes --------------------------------------------------------------------------

    def head_lost(self) -> str | None:
        """Why the whole cluster is gone (its head lost), or None."""
        return self.head.lost

    def head_lost_now(self) -> str | None:
        """As head_lost, or the reason when the head does not answer this moment (one probe)."""
        return self.head.lost_now()

    def _refresh_nodes(self) -> None:
        if self.head.lost:
            self._lost.update(self._probes)
            return
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from gputui.cluster.actors import NodeProbe

        nodes = bounded(self.ray.nodes, PROBE_TIMEOUT_S, None)
        if nodes is None:
            return  # the head did not answer: the watch says whether it is lost
        alive = [n for n in nodes if n.get("Alive")]
        hostnames = [n.get("NodeManagerHostname") for n in alive]
        for n in alive:
            nid = n["NodeID"]
            if nid in self._probes:
                continue
            self._names[nid] = _name(n, hostnames.count(n.get("NodeManagerHostname")) > 1)
            machine = len(self._probes)  # the first node's simulated GPUs are the one-machine demo's (profiles/demo.toml names them)
            probe = self.ray.remote(NodeProbe).options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=False),
                name=None).remote(self.simulated_gpus, machine)
            self._probes[nid] = probe
        for nid in set(self._probes) - {n["NodeID"] for n in alive}:
            self._lost.add(nid)

    def node_of(self, uuid: str) -> str:
        nid = self._uuid_node.get(uuid)
        if nid is None:
            raise KeyError(f"no node holds GPU {uuid}")
        return nid

    def node_named(self, node: str) -> str | None:
        """The live node a profile's `node` names (as placement's on_node matches it), or None."""
        for nid in self._probes:
            if nid not in self._lost and (nid == node or host_matches(self.node_name(nid), node)):
                return nid
        return None

    def node_name(self, node_id: str) -> str:
        return self._names.get(node_id, node_id[:8])

    def probe(self, node_id: str) -> Any:
        return self._probes[node_id]

    # -- the picture --------------------------------------------------------------------

    def snapshot(self) -> ServerSnapshot:
        self._refresh_nodes()
        live = {nid: p for nid, p in self._probes.items() if nid not in self._lost}
        refs = {nid: p.snapshot.remote() for nid, p in live.items()}
        ready, _ = self.ray.wait(list(refs.values()), num_returns=len(refs), timeout=PROBE_TIMEOUT_S) if refs else ([], [])
        done = set(ready)
        pictures: dict[str, ServerSnapshot] = {}
        for nid, ref in refs.items():
            if ref not in done:
                continue
            try:
                pictures[nid] = snapshot_from_json(self.ray.get(ref))
            except Exception:  # noqa: BLE001 - a probe on a dying node: marked below
                self._lost.add(nid)
        gpus: list[GpuSnapshot] = []
        driver = cuda = None
        for nid in sorted(self._probes, key=self.node_name):
            name = self.node_name(nid)
            snap = pictures.get(nid)
            if snap is not None:
                driver, cuda = driver or snap.driver_version, cuda or snap.cuda_driver_version
                self._last[nid] = tuple(dataclasses.replace(g, host=name) for g in snap.gpus)
                for g in snap.gpus:
                    self._uuid_node[g.uuid] = nid
                node_gpus = self._last[nid]
            else:
                why = f"node {name} is lost" if nid in self._lost and not self.head.lost else self.head.lost if nid in self._lost else f"node {name} did not answer in {PROBE_TIMEOUT_S:.0f} s"
                node_gpus = tuple(dataclasses.replace(g, error=why, processes=()) for g in self._last.get(nid, ()))
            base = len(gpus)
            gpus.extend(dataclasses.replace(g, index=base + i) for i, g in enumerate(node_gpus))
        return ServerSnapshot(time.time(), self.backend, tuple(gpus), driver, cuda,
                              None if gpus else self.head.lost or "no node of the Ray cluster answered")

    def close(self) -> None:
        self.head.close()
        if self.head.lost:
            return  # killing an actor goes through the GCS: it would hang; the cluster is gone anyway
        for probe in self._probes.values():
            try:
                self.ray.kill(probe)
            except Exception:  # noqa: BLE001 - a node already gone took its probe with it
                pass


def _name(node: dict[str, Any], shared_hostname: bool) -> str:
    for resource in node.get("Resources", {}):
        if resource.startswith(HOST_RESOURCE):
            return resource[len(HOST_RESOURCE):]
    host = str(node.get("NodeManagerHostname") or "node")
    return f"{host} {node['NodeID'][:8]}" if shared_hostname else host
