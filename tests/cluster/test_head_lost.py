"""Issue 31 N10: the Ray head (GCS) goes away under a running `gputui serve --ray`. Ray's own
answer was to leave the models "ready" and then abort the whole server after its reconnect timeout
(mid-`stop`, leaving a stale socket). Here Ray is told to abort after 5 s (the environment the
server inherits), so a server that still lets Ray decide dies within the test."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from gputui.cluster.head import HeadWatch  # noqa: E402
from tests.server.conftest import start_server  # noqa: E402
from tests.waiting import wait_until  # noqa: E402


def gputui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gputui", *args], capture_output=True, text=True, timeout=300)


def models() -> dict[str, tuple[str, str]]:
    out = gputui("ps", "--demo", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return {m["name"]: (m["state"], m.get("error") or "") for m in json.loads(out.stdout)["models"]}


@pytest.mark.slow
def test_a_lost_head_fails_every_model_at_once_and_the_server_stays_for_stop(
        private_folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_gcs_rpc_server_reconnect_timeout_s", "5")  # Ray's abort, 5 s after the head goes
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"gputui-host:node-1": 1}})
    try:
        cluster.add_node(num_cpus=2, resources={"gputui-host:node-2": 1})
        cluster.wait_for_nodes()
        served = start_server(private_folders, "--ray", cluster.address)
        profile = private_folders / "node2.toml"
        profile.write_text('name = "n2"\n[[models]]\nname = "glm"\nkind = "chatglm3"\npath = "demo:chatglm3"\n'
                           'node = "node-2"\n')
        run = gputui("run", "--demo", str(profile))
        assert run.returncode == 0, run.stdout + run.stderr
        assert models() == {"glm": ("ready", "")}

        head = f"the Ray head at {cluster.address} was lost"
        cluster.remove_node(cluster.head_node)
        wait_until(lambda: models()["glm"][0] != "ready", 120, "the model still looks ready with its head gone")
        state, error = models()["glm"]
        assert state == "failed" and error.startswith(head), (state, error)  # not the model's crash
        time.sleep(10)  # past the 5 s after which Ray aborts a driver it was left to decide for
        assert served.proc.poll() is None, served.output()
        again = gputui("run", "--demo", str(profile))  # a load now is refused in one line, not hung
        assert again.returncode != 0 and head in again.stdout + again.stderr, again.stdout + again.stderr
        stop = gputui("stop", "--demo")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert served.proc.wait(60) == 0, served.output()
        assert not served.socket.exists()
    finally:
        if "served" in locals() and served.proc.poll() is None:
            served.proc.send_signal(signal.SIGKILL)
        cluster.shutdown()


def test_the_head_watch_declares_the_head_lost_only_after_a_silence() -> None:
    answers = [True]
    watch = HeadWatch("h:1", answers=lambda _a: answers[0], interval=0.01, lost_after=0.2)
    try:
        assert watch.lost_now(within=0.1) is None and watch.lost is None
        answers[0] = False
        assert watch.lost_now(within=0) is not None and watch.lost is None  # this moment's answer, not yet for good
        wait_until(lambda: watch.lost is not None, 30, "a silent head was never declared lost")
        answers[0] = True
        assert watch.lost_now(within=0) == watch.lost  # once lost, for good
    finally:
        watch.close()
