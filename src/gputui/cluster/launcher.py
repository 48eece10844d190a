"""RayLauncher: the scheduler's launcher interface, with each worker a Ray actor on the node
its GPUs are on. The scheduler gets a WorkerHandle over an ActorLink (scheduler/worker_link.py's
interface: protocol lines in and out, log lines, an end), carried by the actor's calls. An actor
that dies (its node lost, killed) is a worker that exited."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Iterable
from typing import Any

from gputui.cluster.actors import WorkerHost
from gputui.cluster.head import bounded
from gputui.cluster.telemetry import ClusterTelemetry
from gputui.core.checkpoint_info import CheckpointError
from gputui.core.estimate import Estimate
from gputui.core.kinds import kind_named
from gputui.core.requests import ModelRequest
from gputui.core.split import SplitCosts
from gputui.scheduler.launcher import HELLO_TIMEOUT_S, read_costs_here, worker_env
from gputui.scheduler.worker_handle import WorkerHandle
from gputui.scheduler.worker_link import WorkerGone, next_line

TAKE_WAIT_S = 0.5  # how long one call waits for the worker's next messages
NODES_TIMEOUT_S = 5.0  # for the GCS's list of nodes; no answer is no word on the node
UNAVAILABLE_RETRY_S = 1.0  # between calls to an actor Ray says is unreachable for now


class ActorLink:
    """A worker that is a Ray actor (cluster/actors.py's WorkerHost): each send is one call that
    feeds the worker's channel; a poller takes what it wrote, in batches, into our queues. An
    actor that ends is a worker that exited; one whose node or head went away also says why
    (machine_lost), so the model is shown as lost with its machine, not as crashed."""

    def __init__(self, ray: Any, actor: Any, pid: int, node: str, node_id: str, cluster: ClusterTelemetry) -> None:
        self.ray, self.actor, self.pid, self.node, self.node_id = ray, actor, pid, node, node_id
        self.head_lost, self.head_lost_now = cluster.head_lost, cluster.head_lost_now
        self.returncode: int | None = None
        self.stopping = False  # a shutdown was sent: its end is an exit, not a crash
        self.machine_lost: str | None = None
        self._messages: asyncio.Queue[bytes] = asyncio.Queue()
        self._log: asyncio.Queue[bytes] = asyncio.Queue()
        self._done = asyncio.Event()
        self._poller = asyncio.create_task(self._poll(), name=f"gputui-ray-worker-{pid}")

    def send(self, data: bytes) -> Awaitable[None]:
        try:
            call = self.actor.send.remote(data.splitlines(keepends=True))
        except Exception as e:  # noqa: BLE001 - Ray refused the call at once: the actor is gone
            raise WorkerGone(str(e)) from None
        return self._delivered(call)

    @staticmethod
    async def _delivered(call: Any) -> None:
        try:
            await call
        except Exception as e:  # noqa: BLE001 - the actor is gone: as a closed pipe
            raise WorkerGone(str(e)) from None

    async def read_message(self) -> bytes:
        return await next_line(self._messages)

    async def read_log(self) -> bytes:
        return await next_line(self._log)

    def end_input(self) -> None:
        self.stopping = True
        asyncio.get_running_loop().call_later(0.2, self.kill)  # after the worker left its loop

    async def _poll(self) -> None:
        from ray.exceptions import ActorUnavailableError

        while True:
            if why := self.head_lost():
                self._end(None, lost=True, why=why)
                return
            try:
                lines = await self.actor.take.remote(TAKE_WAIT_S)
            except ActorUnavailableError as e:
                # Ray's word for "not reachable now": a node whose raylet died says this until
                # the cluster declares the node dead (seconds later). Wait for either answer;
                # the scheduler's silence limit bounds the wait.
                if await asyncio.to_thread(self._node_alive):
                    await asyncio.sleep(UNAVAILABLE_RETRY_S)
                    continue
                self._end(e, lost=True)
                return
            except Exception as e:  # noqa: BLE001 - RayActorError and kin: the worker is gone
                # Ray names a dead node in the error before the GCS may have; a head that does
                # not answer took the cluster along; anything else is the actor's own end
                # (killed, crashed): a crashed worker, not a lost node
                if why := await asyncio.to_thread(self.head_lost_now):
                    self._end(e, lost=True, why=why)
                    return
                self._end(e, lost=says_node_died(str(e)) or not await asyncio.to_thread(self._node_alive))
                return
            for line in lines:
                self._messages.put_nowait(line)

    def _node_alive(self) -> bool:
        """The cluster's (GCS's) view of this worker's node."""
        if self.head_lost():
            return False  # and the GCS cannot be asked
        try:
            nodes = bounded(self.ray.nodes, NODES_TIMEOUT_S, None)
        except Exception:  # noqa: BLE001 - the head is unreachable: nothing to say of the node
            return True
        return nodes is None or any(n.get("NodeID") == self.node_id and n.get("Alive") for n in nodes)

    def _end(self, e: BaseException | None, *, lost: bool, why: str | None = None) -> None:
        if self.returncode is not None:
            return
        self.returncode = 0 if self.stopping else -1
        if lost:
            why = why or f"node {self.node} was lost"
            self.machine_lost = why
        else:
            why = f"its Ray actor on node {self.node} ended ({type(e).__name__})"
        if not self.stopping:
            self._log.put_nowait(f"{why}\n".encode())
        self._messages.put_nowait(b"")
        self._log.put_nowait(b"")
        self._done.set()

    async def wait(self) -> int:
        await self._done.wait()
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.head_lost():
            return  # a kill goes through the GCS and would hang; the actor ends with its raylet
        try:
            self.ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def terminate(self) -> None:
        self.kill()


class RayLauncher:
    """One actor per model, pinned to the node of the GPUs placement chose (node affinity, no
    Ray GPU resource: the worker pins the GPU by UUID itself, and checks it got that one)."""

    def __init__(self, cluster: ClusterTelemetry, *, device: str = "cuda", threads: int | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.cluster = cluster
        self.ray = cluster.ray
        self.device = device
        self._env = worker_env(extra_env, threads)
        self._handles: dict[int, tuple[WorkerHandle, str]] = {}  # pid -> (handle, node id)
        self._started: set[int] = set()

    async def read_costs(self, request: ModelRequest, dtype: str) -> tuple[Estimate, SplitCosts | None]:
        """On the named node, by its probe (the path is the one valid there); with no node named,
        here on the head, which assumes the checkpoints sit at the same path on every node (a
        shared filesystem), as Ray's own model loading usually does."""
        self._refuse_if_head_lost()
        node = self.cluster.node_named(request.node) if request.node else None
        if node is None:  # no node named, or one that is not (or no longer) there: placement says which
            return await read_costs_here(request, dtype)
        verdict, value = await self.cluster.probe(node).costs.remote(request.kind, request.path, dtype,
                                                                   request.max_context, list(request.gpus),
                                                                   request.max_batch)
        if verdict != "ok":
            raise CheckpointError(f"{value} (read on node {self.cluster.node_name(node)})")
        return value  # type: ignore[no-any-return]

    async def start_worker(self, kind: str, gpu_uuids: list[str] | None = None) -> WorkerHandle:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._refuse_if_head_lost()
        if not gpu_uuids:
            raise ValueError("a worker on a cluster needs its GPUs: they say which node")
        node = self.cluster.node_of(gpu_uuids[0])
        actor = self.ray.remote(WorkerHost).options(
            num_cpus=0, num_gpus=0, max_concurrency=4, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        ).remote(self._env, [kind_named(kind).runtime.partition(":")[0]])
        where = await asyncio.wait_for(actor.where.remote(), HELLO_TIMEOUT_S)
        link = ActorLink(self.ray, actor, int(where["pid"]), self.cluster.node_name(node), node, self.cluster)
        handle = WorkerHandle(link, on_exit=self._gone)
        self._handles[handle.pid] = (handle, node)
        self._started.add(handle.pid)
        try:
            await handle.wait_hello(HELLO_TIMEOUT_S)
        except BaseException:
            handle.kill()
            raise
        return handle

    def _refuse_if_head_lost(self) -> None:
        if why := self.cluster.head_lost():
            raise CheckpointError(why)  # the preflight's one line: nothing can load now

    def warm_spares(self, kinds: Iterable[str]) -> None:
        pass  # a spare would need a node: workers start when their model's node is known

    def placed(self, handle: WorkerHandle, gpu_uuid: str, n_bytes: int) -> None:
        if self.cluster.simulated_gpus:  # a simulated node books it; a real GPU does by itself
            probe = self.cluster.probe(self.cluster.node_of(gpu_uuid))
            self.ray.get(probe.allocate.remote(gpu_uuid, handle.pid, n_bytes, os.environ.get("USER", "you"),
                                               f"gputui worker (Ray actor, pid {handle.pid})"), timeout=30)

    def _gone(self, handle: WorkerHandle) -> None:
        _h, node = self._handles.pop(handle.pid, (None, None))
        if self.cluster.simulated_gpus and node is not None:
            try:
                self.cluster.probe(node).release.remote(handle.pid)
            except Exception:  # noqa: BLE001 - its node is gone, and its memory with it
                pass

    def live_pids(self) -> set[int]:
        return {pid for pid, (h, _n) in self._handles.items() if h.alive}

    def spare_pids(self) -> set[int]:
        return set()

    def started_pids(self) -> set[int]:
        return set(self._started)

    async def close(self) -> None:
        for handle, _node in list(self._handles.values()):
            await handle.stop(2.0)


def says_node_died(message: str) -> bool:
    """Whether Ray's error says the actor's node died ("The actor is dead because its node has
    died", NODE_DIED), as opposed to its worker process ("... because its worker process has
    died", a kill): only the former is a lost node. Matching "node" and "died" anywhere in the
    text called a killed actor a lost node."""
    said = message.lower()
    return "its node has died" in said or "node_died" in said or "because the node" in said
