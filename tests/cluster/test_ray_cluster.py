"""Workers on a Ray cluster (issue 17), on a real two-node local cluster (ray.cluster_utils):
each node has two simulated GPUs (its own NodeProbe), the workers are Ray actors running the real
worker code with tiny real models on the CPU. Load on node 2, chat, move to node 1, unload; kill
node 2 under a model; the dashboard shows both hosts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")  # the README's test command installs it: CI runs these

from gputui.chat.session import ChatSession  # noqa: E402
from gputui.cluster.launcher import RayLauncher  # noqa: E402
from gputui.cluster.telemetry import ClusterTelemetry  # noqa: E402
from gputui.core.requests import ModelRequest  # noqa: E402
from gputui.scheduler import Scheduler  # noqa: E402
from gputui.scheduler.client import LocalClient  # noqa: E402
from gputui.scheduler.timeline import Timeline  # noqa: E402
from tests.waiting import eventually  # noqa: E402

pytestmark = pytest.mark.slow


class Nodes:
    def __init__(self) -> None:
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True,
                               head_node_args={"num_cpus": 2, "resources": {"gputui-host:node-1": 1}})
        self.second = self.cluster.add_node(num_cpus=2, resources={"gputui-host:node-2": 1})
        ray.init(address=self.cluster.address, logging_level="ERROR", log_to_driver=False)
        self.cluster.wait_for_nodes()

    def close(self) -> None:
        ray.shutdown()
        self.cluster.shutdown()


@pytest.fixture(scope="module")
def nodes() -> Iterator[Nodes]:
    n = Nodes()
    yield n
    n.close()


def make_client() -> tuple[LocalClient, ClusterTelemetry]:
    telemetry = ClusterTelemetry(ray, simulated_gpus=2)
    launcher = RayLauncher(telemetry, device="cpu", threads=1)
    return LocalClient(Scheduler(telemetry, launcher, timeline=Timeline(), memory_return_timeout=5)), telemetry


def alive_actor_classes() -> list[str]:
    # ray._private.state reads the GCS directly; Ray's public state API needs its dashboard
    from ray._private import state

    return sorted(a["ActorClassName"] for a in state.actors().values() if a["State"] == "ALIVE")


def hosts(snapshot: Any) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for g in snapshot.gpus:
        out.setdefault(g.host, []).append(g.index)
    return out


async def answer(client: LocalClient, name: str) -> str:
    session = ChatSession(client, name, "chatglm3", params={"max_new_tokens": 4, "temperature": 0}, journaled=False)
    events = [e async for e in session.send("hello")]
    assert events[-1].event == "done", events
    return "".join(e.text for e in events if e.event == "text")


async def test_load_on_node_2_chat_move_to_node_1_unload(nodes: Nodes, tiny_chatglm3_path: Path) -> None:
    client, telemetry = make_client()
    try:
        snap = telemetry.snapshot()
        assert hosts(snap) == {"node-1": [0, 1], "node-2": [2, 3]}
        assert len({g.uuid for g in snap.gpus}) == 4  # each node's GPUs are its own
        view = await client.load(ModelRequest("glm", "chatglm3", str(tiny_chatglm3_path), max_context=256,
                                              node="node-2"))
        assert view.ready, view.error
        assert view.gpus[0].index in (2, 3)
        placed = telemetry.snapshot()
        on = [g for g in placed.gpus if any(p.pid == view.pid for p in g.processes)]
        assert [g.host for g in on] == ["node-2"] and on[0].used_bytes  # booked on node 2's GPU
        await answer(client, "glm")
        node1_gpu = next(g.uuid for g in snap.gpus if g.host == "node-1")
        moved = await client.move("glm", node1_gpu)
        assert moved.ready and moved.gpus[0].index in (0, 1) and moved.pid != view.pid
        await answer(client, "glm")
        result = await client.unload("glm")
        assert result.returned
        await eventually(lambda: alive_actor_classes() == ["NodeProbe", "NodeProbe"], 60,
                         "an unloaded model's worker actor is still alive")  # only the two probes remain
    finally:
        await client.close()
        telemetry.close()


async def test_the_preflight_reads_headers_on_the_node_that_will_load(nodes: Nodes, tmp_path: Path) -> None:
    """The path is the loading node's: its probe reads the headers there, and says so when it can't."""
    client, telemetry = make_client()
    try:
        view = await client.load(ModelRequest("glm", "chatglm3", str(tmp_path / "only-elsewhere"), max_context=256,
                                              node="node-2"))
        assert view.state.value == "failed" and "(read on node node-2)" in (view.error or ""), view.error
    finally:
        await client.close()
        telemetry.close()


async def test_the_dashboard_shows_both_hosts(nodes: Nodes) -> None:
    from gputui.tui.app import make_app
    from tests.tui.test_dashboard import screen_text

    client, telemetry = make_client()
    app = make_app(telemetry, interval=0.2, client=client)
    try:
        async with app.run_test(size=(120, 50)):
            await eventually(lambda: "host node-1" in screen_text(app) and "host node-2" in screen_text(app), 60,
                             "the hosts were not drawn")
            assert "on 2 hosts" in screen_text(app)
    finally:
        telemetry.close()


def test_gputui_serve_on_the_cluster(nodes: Nodes, private_folders: Path) -> None:
    """`gputui serve --ray ADDRESS --demo`, then `gputui run` and `ps` through it."""
    import json
    import signal
    import subprocess
    import sys

    from tests.server.conftest import start_server

    profile = private_folders / "cluster.toml"
    profile.write_text('name = "cluster"\n'
                       '[[models]]\nname = "chatglm3"\nkind = "chatglm3"\npath = "demo:chatglm3"\nnode = "node-2"\n'
                       '[[models]]\nname = "blip2"\nkind = "blip2"\npath = "demo:blip2"\nnode = "node-1"\n')
    served = start_server(private_folders, "--ray", nodes.cluster.address)
    try:
        run = subprocess.run([sys.executable, "-m", "gputui", "run", "--demo", str(profile)], capture_output=True,
                             text=True, timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
        ps = json.loads(subprocess.run([sys.executable, "-m", "gputui", "ps", "--demo", "--json"], capture_output=True,
                                       text=True, timeout=120).stdout)
        assert sorted(m["name"] for m in ps["models"]) == ["blip2", "chatglm3"]
        assert all(m["state"] == "ready" for m in ps["models"])
        where = {m["name"]: m["gpus"][0]["index"] for m in ps["models"]}
        assert where["chatglm3"] in (2, 3) and where["blip2"] in (0, 1)  # node-1's GPUs come first
        assert {m["name"]: m["gpus"][0]["host"] for m in ps["models"]} == {"chatglm3": "node-2", "blip2": "node-1"}
        table = subprocess.run([sys.executable, "-m", "gputui", "ps", "--demo"], capture_output=True, text=True,
                               timeout=120).stdout
        assert f"node-2:{where['chatglm3']}" in table and f"node-1:{where['blip2']}" in table, table
    finally:
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(120) == 0, served.output()
    assert alive_actor_classes() == []  # the server's end leaves no worker and no probe behind


async def test_last_a_lost_node_fails_its_models_and_the_rest_serve(nodes: Nodes, tiny_chatglm3_path: Path) -> None:
    """Last in this module: it takes node 2 away for good."""
    client, telemetry = make_client()
    try:
        keep = await client.load(ModelRequest("keep", "chatglm3", str(tiny_chatglm3_path), max_context=256,
                                              node="node-1"))
        lose = await client.load(ModelRequest("lose", "chatglm3", str(tiny_chatglm3_path), max_context=256,
                                              node="node-2"))
        assert keep.ready and lose.ready, (keep.error, lose.error)
        nodes.cluster.remove_node(nodes.second)  # the machine goes away under its model
        await eventually(lambda: client.model("lose") is not None and not client.model("lose").ready, 120,
                         "the lost node's model still looks ready")
        gone = client.model("lose")
        assert gone is not None and gone.state.value == "failed" and gone.error == "node node-2 was lost"
        assert await answer(client, "keep") is not None  # node 1's model still answers
        snap = await asyncio.to_thread(telemetry.snapshot)
        lost = [g for g in snap.gpus if g.host == "node-2"]
        assert lost and all(g.error and "lost" in g.error for g in lost)
        assert all(g.error is None for g in snap.gpus if g.host == "node-1")  # and keeps updating
    finally:
        await client.close()
        telemetry.close()
