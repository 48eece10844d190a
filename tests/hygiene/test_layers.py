"""The architecture, checked: who may import what.

- the dashboard (tui) never imports torch, and never creates a CUDA context;
- the worker side never imports Textual;
- core and scheduler import neither Textual nor torch;
- only gputui.hardware.nvml imports pynvml.
Each check imports in a fresh interpreter and looks at sys.modules.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "gputui"


def loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys, json; print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module,banned", [
    ("gputui.core.snapshot, gputui.core.placement, gputui.core.kinds, gputui.core.profiles, gputui.core.protocol", {"textual", "torch", "pynvml", "transformers"}),
    ("gputui.scheduler, gputui.scheduler.factory, gputui.scheduler.profiles_runner", {"textual", "torch", "transformers"}),
    ("gputui.tui.app, gputui.tui.launch, gputui.tui.screens.chat, gputui.tui.screens.doctor", {"torch", "transformers"}),
    ("gputui.worker.main, gputui.worker.loading, gputui.models.glm.chatglm3_runtime, gputui.models.blip2.runtime", {"textual"}),
    ("gputui.chat.session, gputui.cli.doctor, gputui.cli, gputui.cli.commands, gputui.cli.server", {"textual", "torch"}),
])
def test_each_layer_keeps_to_its_imports(module: str, banned: set[str]) -> None:
    mods = loaded_after(f"import {module}")
    assert not (mods & banned), f"{module} pulled in {mods & banned}"


def test_only_the_nvml_backend_imports_pynvml() -> None:
    offenders = []
    for f in SRC.rglob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "pynvml" for n in names) and f.name != "nvml.py":
                offenders.append(str(f.relative_to(SRC)))
    assert offenders == []


async def test_the_running_dashboard_never_loads_torch() -> None:
    """Drive the demo app with a model loaded; the TUI process must not have imported torch."""
    code = r'''
import asyncio, sys, json
from pathlib import Path
from gputui.scheduler.client import LocalClient
from gputui.hardware.simulated import demo_server
from gputui.scheduler.factory import make_scheduler
from gputui.scheduler.timeline import Timeline
from gputui.tui.app import make_app

async def main():
    server = demo_server()
    sched = make_scheduler(server, spare=False, timeline=Timeline())
    app = make_app(server, interval=0.05, client=LocalClient(sched), startup_profile="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(600):
            await pilot.pause(0.1)
            if sum(r.state == "ready" for r in sched.models.values()) == 2:
                break
        states = {r.name: r.state for r in sched.models.values()}
    print(json.dumps({"states": states, "torch": "torch" in sys.modules, "textual": "textual" in sys.modules}))
asyncio.run(main())
'''
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["states"] == {"chatglm3": "ready", "blip2": "ready"}
    assert result["textual"] and not result["torch"]


@pytest.mark.slow
def test_a_running_server_never_loads_textual(private_folders: Path) -> None:
    """`gputui serve` imported Textual (189 modules) to format a log line (issue 30). The
    server runs here until it listens, has loaded a model and answered a chat, then looks at
    sys.modules and stops itself."""
    code = r'''
import asyncio, json, os, signal, sys, threading
from gputui.cli import main
from gputui.core.requests import ModelRequest
from gputui.remote.lifecycle import socket_path

def probe():
    async def go():
        from gputui.remote.client import RemoteClient
        while not socket_path(True).exists():
            await asyncio.sleep(0.05)
        c = await RemoteClient.connect(socket_path(True))
        await c.load(ModelRequest("glm", "chatglm3", "demo:chatglm3", max_context=128))
        from gputui.api.chat import ChatRequest
        async for _ in c.chat("glm", ChatRequest(({"role": "user", "content": "hi"},), params={"max_new_tokens": 2})):
            pass
        await c.close()
    asyncio.run(go())
    print("MODULES " + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "textual")), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=probe, daemon=True).start()
sys.exit(main(["serve", "--demo"]))
'''
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("MODULES "))
    assert json.loads(line[len("MODULES "):]) == []


def test_every_gputui_variable_is_read_through_core_env_and_listed_there() -> None:
    """One module reads GPUTUI_* (so doctor can list what is set); every name read is in its table."""
    import re

    from gputui.core.env import VARIABLES

    direct, unlisted = [], set()
    for f in SRC.rglob("*.py"):
        text = f.read_text()
        if f.name != "env.py" and re.search(r"environ(\.get\(|\[)\s*[\"']GPUTUI_", text):
            direct.append(str(f.relative_to(SRC)))
        unlisted |= set(re.findall(r"env\.(?:get|switched_on)\(\s*[\"'](GPUTUI_\w+)", text)) - set(VARIABLES)
    assert direct == [] and unlisted == set()


def test_doctor_names_the_gputui_variables_it_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from gputui.doctor.checks import gputui_env_findings

    monkeypatch.setenv("GPUTUI_FUSED_DECODE", "0")
    found = {f.title: f.evidence for f in gputui_env_findings()}
    assert "GPUTUI_FUSED_DECODE=0" in found and "fused" in found["GPUTUI_FUSED_DECODE=0"]
