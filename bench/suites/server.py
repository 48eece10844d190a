"""The per-user server on a real GPU: start -> both models ready (the server warms a spare per
kind as it starts, so their imports run side by side), attach -> the state drawn, `gputui chat`
-> first token to a ready model, and stop -> memory back."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import checkpoints, say
from bench.suites.ready import requests
from gputui.remote.client import RemoteClient
from gputui.remote.lifecycle import socket_path


def _env(run: Path) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "GPUTUI_RUNTIME_DIR": str(run), "GPUTUI_DATA_DIR": str(run.parent / "data"),
            "GPUTUI_STATE_DIR": str(run.parent / "state"), "GPUTUI_CONFIG_DIR": str(run.parent / "config"),
            "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}


def start_server(name: str, *flags: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """`gputui serve FLAGS` with folders of its own under /tmp/gputui-bench-NAME, once it listens;
    (the process, the environment its commands need). This process uses the same folders."""
    run_dir = Path(f"/tmp/gputui-bench-{name}/run")
    run_dir.mkdir(parents=True, exist_ok=True)
    env = _env(run_dir)
    os.environ.update({k: env[k] for k in ("GPUTUI_RUNTIME_DIR", "GPUTUI_DATA_DIR", "GPUTUI_STATE_DIR",
                                           "GPUTUI_CONFIG_DIR")})
    server = subprocess.Popen([sys.executable, "-m", "gputui", "serve", *flags], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    assert server.stdout is not None
    for line in server.stdout:
        if "listening on" in line:
            break
    return server, env


async def run(args: argparse.Namespace) -> None:
    glm, blip = requests(checkpoints(args.root))
    t0 = time.monotonic()
    server, env = start_server("server")
    say(step="server_listening", seconds=round(time.monotonic() - t0, 2))

    t = time.monotonic()
    client = await RemoteClient.connect(socket_path(demo=False))
    say(step="attach", seconds_to_state=round(time.monotonic() - t, 4), models=len(client.models()))
    from gputui.core.requests import for_the_dashboard

    for req in (glm, blip):  # right after the server started: its spares may still be importing
        t = time.monotonic()
        view = await client.load(for_the_dashboard(req))  # as the dashboard's load form sends it
        say(step="load_after_start", model=req.name, state=view.state.value, error=view.error,
            seconds=round(time.monotonic() - t, 2), since_server_start_s=round(time.monotonic() - t0, 2),
            timings=view.timings)

    # the dashboard attached: from connect to both models in its table (headless, Textual's pilot)
    from gputui.hardware.nvml import NvmlTelemetry
    from gputui.tui.app import make_app

    t = time.monotonic()
    viewer = await RemoteClient.connect(socket_path(demo=False))
    app = make_app(NvmlTelemetry(), interval=0.5, client=viewer, attached=True)
    async with app.run_test(size=(160, 50)) as pilot:
        table = app.dashboard.query_one("#models")
        while table.row_count < 2:  # type: ignore[attr-defined]
            await pilot.pause(0.005)
        say(step="attach_dashboard_drawn", seconds=round(time.monotonic() - t, 3))
    await viewer.close()

    # what other users' tools see of the workers (issue 30, item 9)
    smi = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"],
                         capture_output=True, text=True)
    titles = {v.name: Path(f"/proc/{v.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
              for v in client.models() if v.pid}
    say(step="worker_titles", nvidia_smi=smi.stdout.strip().splitlines(), cmdlines=titles)

    # chat by name (issue 30): the model the dashboard loaded, no profile named
    for attempt in range(3):
        t = time.monotonic()
        chat = subprocess.Popen([sys.executable, "-m", "gputui", "chat", "chatglm3", "--max-new-tokens", "32"],
                                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert chat.stdin is not None and chat.stdout is not None
        chat.stdin.write("hello\n")
        chat.stdin.close()
        first = chat.stdout.read(1)
        first_s = time.monotonic() - t
        chat.wait(120)
        err = chat.stderr.read() if chat.stderr else ""
        say(step="gputui_chat_by_name_first_token", attempt=attempt, seconds_from_launch=round(first_s, 3),
            got_text=bool(first), exit=chat.returncode, stats=[x for x in err.splitlines() if "tokens" in x][-1:],
            said=[x for x in err.splitlines() if x.startswith("#")][:2])
    ps = subprocess.run([sys.executable, "-m", "gputui", "ps", "--json"], env=env, capture_output=True, text=True)
    say(step="ps", models=[{k: m[k] for k in ("name", "state", "pid", "keep_alive_s")}
                           for m in json.loads(ps.stdout)["models"]])

    t = time.monotonic()
    stop = subprocess.run([sys.executable, "-m", "gputui", "stop"], env=env, capture_output=True, text=True,
                          timeout=120)
    say(step="stop", seconds=round(time.monotonic() - t, 2), output=stop.stdout.strip().splitlines(),
        server_exit=server.wait(60))
    await client.close()
