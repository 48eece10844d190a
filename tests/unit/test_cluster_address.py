"""`gputui serve --ray ADDRESS` (issue 30, item 7): a wrong address is one line within seconds,
not minutes of Ray's C++ warnings with Ctrl-C ignored; `auto` never joins another user's cluster."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gputui.cluster.address import ClusterRefused, probe, resolve


def test_a_closed_port_is_one_line(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(ClusterRefused, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        probe(f"127.0.0.1:{port}", timeout=2)
    with pytest.raises(ClusterRefused, match="not a host:port"):
        probe("127.0.0.1:http")


def test_a_listening_port_passes(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    probe(f"127.0.0.1:{s.getsockname()[1]}", timeout=2)
    s.close()


def test_auto_reads_the_local_clusters_address_only_when_this_user_started_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    f = tmp_path / "ray_current_cluster"
    with pytest.raises(ClusterRefused, match="no Ray cluster was started"):
        resolve("auto", f)
    f.write_text("10.1.2.3:6379\n")
    assert resolve("auto", f) == "10.1.2.3:6379"
    assert resolve("127.0.0.1:7000", f) == "127.0.0.1:7000"
    if os.geteuid() == 0:
        os.chown(f, 65534, 65534)
        with pytest.raises(ClusterRefused, match="started by uid 65534, not by you"):
            resolve("auto", f)


def test_serve_with_a_wrong_ray_address_says_so_in_one_line(private_folders: Path) -> None:
    pytest.importorskip("ray")
    out = subprocess.run([sys.executable, "-m", "gputui", "serve", "--ray", "127.0.0.1:1", "--demo"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "cannot reach the Ray cluster at 127.0.0.1:1" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
