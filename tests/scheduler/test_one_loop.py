"""One loop owns the scheduler's state; other threads read immutable snapshots (client-seam
issue, item 2). The dashboard's poll thread asks for our workers' pids while the loop adds
models: that used to raise `dictionary changed size during iteration` on the poll thread."""

from __future__ import annotations

import asyncio
import sys
import threading

from gputui.core.requests import ModelRequest
from tests.scheduler.conftest import World


async def test_another_thread_reads_the_pids_while_the_loop_adds_models(world: World, tmp_path) -> None:  # type: ignore[no-untyped-def]
    errors: list[BaseException] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                dict(world.scheduler.worker_pids())
                list(world.scheduler.views())
            except RuntimeError as e:
                errors.append(e)
                return

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    reader = threading.Thread(target=poll, daemon=True)
    reader.start()
    try:
        for i in range(3000):  # refused at preflight (no such folder): each one adds a record
            world.scheduler.submit_load(ModelRequest(f"m{i}", "chatglm3", str(tmp_path / "none")))
            if i % 25 == 0:
                await asyncio.sleep(0)
    finally:
        stop.set()
        reader.join(10)
        sys.setswitchinterval(old)
    assert not errors, errors[0]
    while any(not v.state.resting for v in world.scheduler.views()):
        await asyncio.sleep(0.01)
