"""The base install (issue 29): the wheel built from this checkout, installed in a fresh venv
with no torch, watches GPUs, runs the server and its API, and says in one line what a model
needs - as `pip install gputui` on a login node would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
NO_INDEX = ("Could not find a version", "NewConnectionError", "Temporary failure in name resolution",
            "No matching distribution")


def folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / (1 << 20)


def base_venv(tmp_path: Path, constraints: list[str] | None = None) -> tuple[Path, dict[str, str]]:
    """A fresh venv with the wheel built from this checkout, its dependencies held to
    `constraints` (pins); (its bin folder, an environment without the checkout on the path)."""
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
                           capture_output=True, text=True, timeout=900)
    if build.returncode != 0 and any(s in build.stderr for s in NO_INDEX):
        pytest.skip("no package index reachable to build the wheel")
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheels.glob("gputui-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pins = tmp_path / "constraints.txt"
    pins.write_text("".join(f"{c}\n" for c in constraints or []))
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--only-binary=:all:",
                              "-c", str(pins), str(wheel)], capture_output=True, text=True, timeout=1800)
    if install.returncode != 0 and any(s in install.stderr for s in NO_INDEX):
        pytest.skip("no package index reachable for the base install's dependencies")
    assert install.returncode == 0, install.stderr[-2000:]
    return venv / "bin", {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of the checkout


def floors() -> list[str]:
    """Every direct dependency of the base install at the lowest version pyproject.toml allows."""
    import re

    from gputui.core.files import loads_toml

    deps = loads_toml((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    out = []
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9.]*)[^;]*", dep)
        if m:  # (a dependency with an environment marker is for older Pythons only)
            out.append(f"{m.group(1)}=={m.group(2)}")
    return out


def test_the_base_install_needs_no_torch_and_says_what_models_need(tmp_path: Path, private_folders: Path) -> None:
    bin_, env = base_venv(tmp_path)
    venv, py = bin_.parent, bin_ / "python"

    def gputui(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(bin_ / "gputui"), *args], capture_output=True, text=True, timeout=300, env=env,
                              cwd=tmp_path)

    assert subprocess.run([str(py), "-c", "import torch"], capture_output=True, env=env).returncode != 0
    site = next((venv / "lib").glob("python*/site-packages"))
    size = folder_mib(site) - folder_mib(site / "pip") if (site / "pip").exists() else folder_mib(site)
    assert size < 150, f"the base install is {size:.0f} MiB"

    status = gputui("status", "--demo")
    assert status.returncode == 0 and "SIMULATED" in status.stdout, status.stderr
    doctor = gputui("doctor", "--demo", "--no-subprocess")
    assert "model runtime not installed" in doctor.stdout and "gputui[models]" in doctor.stdout, doctor.stdout

    server = subprocess.Popen([str(bin_ / "gputui"), "serve", "--demo", "--api"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    try:
        assert server.stdout is not None
        end = time.monotonic() + 120
        for line in server.stdout:
            if "listening on" in line or time.monotonic() > end:
                break
        run = gputui("run", "--demo", "demo")
        said = run.stdout + run.stderr
        assert run.returncode != 0 and "pip install 'gputui[models]'" in said and "Traceback" not in said, said
        assert gputui("api", "--demo", "--json").returncode == 0  # the API runs without torch too
        assert gputui("stop", "--demo").returncode == 0
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
        shutil.rmtree(venv, ignore_errors=True)


SMOKE = """
import asyncio, json, sys
from gputui.hardware.simulated import demo_server
from gputui.tui.app import make_app

async def main():
    app = make_app(demo_server(), interval=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        while app.snapshots_applied < 2:
            await pilot.pause(0.05)
        for key in ("f", "v", "f", "v"):
            await pilot.press(key)
        await pilot.pause(0.2)
        print(json.dumps({"drawn": app.snapshots_applied}))

asyncio.run(main())
"""


def test_the_lowest_versions_pyproject_allows_still_work(tmp_path: Path, private_folders: Path) -> None:
    """The floors are tested, not hoped: the base install held to every direct dependency's
    lowest allowed version runs the dashboard (Textual's pilot), `status`, and the server with its
    API and metrics."""
    pins = floors()
    assert any(p.startswith("textual==") for p in pins) and any(p.startswith("aiohttp==") for p in pins)
    bin_, env = base_venv(tmp_path, pins)
    frozen = subprocess.run([str(bin_ / "python"), "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    held = {line.split("==")[0].lower().replace("_", "-") for line in frozen.splitlines() if "==" in line}
    assert {p.split("==")[0].lower().replace("_", "-") for p in pins} <= held
    assert all(pin.lower().replace("_", "-") in frozen.lower().replace("_", "-") for pin in pins), frozen
    smoke = subprocess.run([str(bin_ / "python"), "-c", SMOKE], capture_output=True, text=True, timeout=300, env=env,
                           cwd=tmp_path)
    assert smoke.returncode == 0 and '"drawn"' in smoke.stdout, smoke.stderr[-3000:]
    status = subprocess.run([str(bin_ / "gputui"), "status", "--demo"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    assert status.returncode == 0, status.stderr
    server = subprocess.Popen([str(bin_ / "gputui"), "serve", "--demo", "--api"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if "listening on" in line:
                break
        metrics = subprocess.run([str(bin_ / "gputui"), "metrics", "--demo"], capture_output=True, text=True,
                                 env=env, cwd=tmp_path, timeout=120)
        assert metrics.returncode == 0 and "gputui_gpu_memory_total_bytes" in metrics.stdout, metrics.stderr
        assert subprocess.run([str(bin_ / "gputui"), "stop", "--demo"], env=env, cwd=tmp_path,
                              timeout=120).returncode == 0
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
