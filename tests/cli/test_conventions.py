"""The conventions users bring from nvitop, gpustat, Ollama and lms: --version, global flags
anywhere, JSON on every read command (even with no driver), quiet on a closed pipe, one line for
a bad value, and no dashboard drawn into a pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gputui import __version__
from gputui.cli import main


def run_cli(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gputui", *args], stdout=stdout, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True, timeout=120, env=os.environ.copy())


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"gputui {__version__}"


@pytest.mark.parametrize("argv", [["--demo", "status", "--json"], ["status", "--demo", "--json"],
                                  ["status", "--json", "--demo"]])
def test_demo_works_before_or_after_the_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["simulated"] is True


def test_status_json_with_no_driver_is_still_json(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from gputui.hardware import nvml
    from gputui.hardware.base import TelemetryUnavailable

    def no_driver(self, nvml_module=None):  # type: ignore[no-untyped-def]
        raise TelemetryUnavailable("no NVIDIA driver found (NVML: test)")

    monkeypatch.setattr(nvml.NvmlTelemetry, "__init__", no_driver)
    assert main(["status", "--json"]) == 2
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert doc["gpus"] == [] and "no NVIDIA driver" in doc["error"] and out.err.count("\n") == 1


def test_a_closed_pipe_ends_quietly() -> None:
    """`gputui status --json | head -0`: the reader is gone before we write a byte."""
    read, write = os.pipe()
    os.close(read)
    try:
        r = run_cli("--demo", "status", "--json", stdout=write)
    finally:
        os.close(write)
    assert r.returncode == 141, r.stderr
    assert r.stderr == ""


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "0.001", "soon"])
def test_a_bad_interval_is_one_line(value: str) -> None:
    r = run_cli("--demo", "--interval", value)
    assert r.returncode == 2
    assert "not a refresh interval" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_the_dashboard_into_a_pipe_is_one_line_not_escape_codes() -> None:
    r = run_cli("--demo")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "gputui status" in r.stderr and "\x1b" not in r.stderr


def test_profiles_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    demo = next(p for p in doc["profiles"] if p["name"] == "demo")
    assert demo["source"] == "shipped" and demo["error"] is None
    assert {m["name"] for m in demo["models"]} == {"chatglm3", "blip2"}


def test_run_dry_run_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--demo", "run", "demo", "--dry-run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["profile"] == "demo" and doc["fits"] is True and doc["simulated"] is True
    assert [line["model"] for line in doc["plan"]] == ["chatglm3", "blip2"]


def test_json_without_dry_run_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--demo", "run", "demo", "--json"]) == 2
    assert "--dry-run" in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["chat", "--demo", "chatglm3", "--max-new-tokens", "-5"], "max_new_tokens"),
    (["chat", "--demo", "chatglm3", "--temperature", "-1"], "temperature"),
    (["run", "demo", "--save-as", "../../x"], "name"),
])
def test_bad_values_are_one_line(argv: list[str], says: str) -> None:
    r = run_cli(*argv)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr


def test_shell_completion_is_generated_from_the_parser() -> None:
    pytest.importorskip("shtab")
    r = run_cli("--print-completion", "bash")
    assert r.returncode == 0 and "--dry-run" in r.stdout and "--max-new-tokens" in r.stdout
