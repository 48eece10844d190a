"""Starting worker processes, behind a small interface.

The scheduler asks a launcher for a started worker and tells it when one is placed or gone;
nothing else. LocalLauncher spawns a fresh interpreter on this machine (never a fork of a
process that may have touched CUDA); cluster/launcher.py's RayLauncher places the same worker
on a Ray cluster; simulated_launcher.py runs real workers on the CPU for `--demo` and the tests.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from gputui.core.checkpoint_info import CheckpointError
from gputui.core.estimate import Estimate
from gputui.core.kinds import kind_named, models_missing, preflight_costs
from gputui.core.requests import ModelRequest
from gputui.core.split import SplitCosts
from gputui.paths import child_env
from gputui.scheduler.worker_handle import WorkerHandle
from gputui.scheduler.worker_link import ProcessLink

HELLO_TIMEOUT_S = 120.0
# Library noise off, and no downloads ever: models come from local folders only.
WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
    # Nothing is visible until the worker pins its own GPUs, by UUID, at load time; PCI order
    # makes any index it reports agree with nvidia-smi.
    "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    "CUDA_VISIBLE_DEVICES": "",
}


def worker_env(extra_env: dict[str, str] | None = None, threads: int | None = None) -> dict[str, str]:
    """What every worker gets on top of its launcher's environment, wherever it runs (here: on
    top of paths.child_env; on a Ray node: on top of the node's): the one place it is built."""
    return {**WORKER_ENV, **(extra_env or {}), **({"OMP_NUM_THREADS": str(threads)} if threads else {})}


async def read_costs_here(request: ModelRequest, dtype: str) -> tuple[Estimate, SplitCosts | None]:
    """The preflight read on this machine (in a thread: a slow filesystem must not stop the loop)."""
    return await asyncio.to_thread(preflight_costs, kind_named(request.kind), Path(request.path), dtype,
                                   request.max_context, request.gpus, request.max_batch)


class WorkerLauncher(Protocol):
    device: str  # "cuda" or "cpu": what the workers compute on

    async def start_worker(self, kind: str, gpu_uuids: list[str]) -> WorkerHandle:
        """A worker for a model of `kind` that will load on these GPUs (a launcher that spans
        machines starts it on theirs)."""
        ...

    async def read_costs(self, request: ModelRequest, dtype: str) -> tuple[Estimate, SplitCosts | None]:
        """The preflight, from the checkpoint's headers, read where the model will load (the
        path is valid there)."""
        ...

    def warm_spares(self, kinds: Iterable[str]) -> None: ...
    def placed(self, handle: WorkerHandle, gpu_uuid: str, n_bytes: int) -> None: ...
    async def close(self) -> None: ...
    # what it has running: the no-orphan-worker invariant is checked against these (tests)
    def live_pids(self) -> set[int]: ...
    def spare_pids(self) -> set[int]: ...
    def started_pids(self) -> set[int]: ...


class LocalLauncher:
    """Spawns `python -m gputui.worker` here. A worker imports torch, transformers and only its
    own kind's runtime (GLM's module alone took 11-19 s to import on the GPU machine; BLIP2's
    is another). Keeps one spare worker per kind warm when asked to, so a load of that kind skips
    those seconds; spares of different kinds import side by side (measured: almost free)."""

    device = "cuda"

    def __init__(self, *, spare: bool = True, extra_env: dict[str, str] | None = None,
                 device: str = "cuda", threads: int | None = None) -> None:
        self.device = device
        self._spare_wanted = spare
        self._spares: dict[str, asyncio.Task[WorkerHandle]] = {}
        self._extra_env = extra_env or {}
        self._threads = threads
        self._handles: set[WorkerHandle] = set()
        self._started: set[int] = set()

    def _env(self) -> dict[str, str]:
        return child_env(worker_env(self._extra_env, self._threads))

    async def read_costs(self, request: ModelRequest, dtype: str) -> tuple[Estimate, SplitCosts | None]:
        why = models_missing()  # said at the preflight, in one line, before any worker starts
        if why:
            raise CheckpointError(why)
        return await read_costs_here(request, dtype)

    async def _spawn(self, kind: str) -> WorkerHandle:
        preload = kind_named(kind).runtime.partition(":")[0]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gputui.worker", "--preload", preload,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self._env(), limit=64 << 20,
            # a session of its own: Ctrl-C in the terminal that started the server (its process
            # group) never reaches a worker; the server unloads them, and a worker whose server
            # died sees its stdin close and exits
            start_new_session=True,
        )
        handle = WorkerHandle(ProcessLink(proc), on_exit=self._gone)
        self._handles.add(handle)
        self._started.add(handle.pid)
        try:
            await handle.wait_hello(HELLO_TIMEOUT_S)
        except BaseException:  # never said hello (or we were cancelled): it must not live on
            handle.kill()
            raise
        return handle

    def _gone(self, handle: WorkerHandle) -> None:
        self._handles.discard(handle)
        self.ended(handle)

    async def start_worker(self, kind: str, gpu_uuids: list[str] | None = None) -> WorkerHandle:
        handle: WorkerHandle | None = None  # every GPU here is reachable: the uuids do not matter
        task = self._spares.pop(kind, None)
        if task is not None:
            try:
                handle = await task
            except Exception:  # noqa: BLE001 - a spare that failed to start: start one now
                handle = None
            if handle is not None and not handle.alive:
                handle = None
        if handle is None:
            handle = await self._spawn(kind)
        self.warm_spares([kind])  # the next load of this kind is fast too
        return handle

    def warm_spares(self, kinds: Iterable[str]) -> None:
        """Start a spare for each kind that has none (e.g. at start, for the kinds about to load)."""
        if not self._spare_wanted or models_missing():  # no torch here: a spare could only die
            return
        for kind in kinds:
            if kind not in self._spares:
                self._spares[kind] = asyncio.create_task(self._spawn(kind), name=f"gputui-spare-{kind}")

    def placed(self, handle: WorkerHandle, gpu_uuid: str, n_bytes: int) -> None:
        pass  # the real GPU books the memory itself

    def live_pids(self) -> set[int]:
        return {h.pid for h in self._handles if h.alive}

    def spare_pids(self) -> set[int]:
        out = set()
        for task in self._spares.values():
            if task.done() and not task.cancelled() and task.exception() is None and task.result().alive:
                out.add(task.result().pid)
        return out

    def started_pids(self) -> set[int]:
        return set(self._started)

    def ended(self, handle: WorkerHandle) -> None:
        """A worker is gone (a subclass that booked its memory gives it back here)."""

    async def close(self) -> None:
        spares, self._spares = list(self._spares.values()), {}
        for task in spares:
            task.cancel()
            try:
                h = await task
                await h.stop(2.0)
            except BaseException:  # noqa: BLE001 - cancelled mid-start: _spawn killed it
                pass
        for h in list(self._handles):
            await h.stop(2.0)
