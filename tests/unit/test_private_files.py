"""Files gputui writes are the user's alone, and nothing of ours is in a shared /tmp
(hostile-server issue, items 4 and 5).

Some cases need a second user: as root (CI), a file is handed to uid 65534 with chown, as
another user on the same machine would have made it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from gputui import paths
from gputui.core.units import MiB
from gputui.doctor.bundle import redact_secrets, write_bundle
from gputui.doctor.checks import Finding, gpu_findings
from gputui.hardware.simulated import SimulatedServer, make_gpus
from gputui.journal import ConversationLog
from gputui.scheduler.lock import SchedulerLocked, UserLock, default_lock_path
from gputui.scheduler.timeline import Timeline

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file another user owns")
OTHER_UID = 65534


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


async def test_journals_and_the_event_log_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTUI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(os, "umask", os.umask)  # a permissive umask must not matter
    old = os.umask(0o022)
    try:
        log = await ConversationLog.create("glm", "chatglm3")
        await log.user_message("a private question")
        timeline = Timeline(paths.timeline_path())
        timeline.record("ready", "glm")
        timeline.flush()  # written by its own thread
    finally:
        os.umask(old)
    assert mode(tmp_path / "data") == 0o700 and mode(paths.conversations_dir()) == 0o700
    assert mode(log.path) == 0o600 and mode(paths.timeline_path()) == 0o600


async def test_loose_folders_and_files_are_tightened_and_said_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("GPUTUI_DATA_DIR", str(data))
    (data / "conversations").mkdir(parents=True)
    os.chmod(data, 0o755)
    os.chmod(data / "conversations", 0o755)
    journal = data / "conversations" / "old.jsonl"
    journal.write_text(json.dumps({"type": "meta", "model": "glm"}) + "\n")
    os.chmod(journal, 0o644)
    paths.take_notes()
    log, _ = ConversationLog.open(journal)
    await log.user_message("more")
    await (await ConversationLog.create("glm", "chatglm3")).user_message("x")
    # the folder a setting names is left as it is (issue 31, N16); what gputui makes in it is private
    assert mode(data) == 0o755 and mode(data / "conversations") == 0o700 and mode(journal) == 0o600
    notes = paths.take_notes()
    assert len([n for n in notes if str(journal) in n]) == 1 and any("0700" in n for n in notes)
    assert paths.take_notes() == []  # said once


def test_the_lock_is_never_in_a_shared_temp_folder_and_never_moves_with_xdg_runtime_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 31, N2/N3: systemd-logind removes $XDG_RUNTIME_DIR at logout, and su, sudo -u, cron
    and tmux disagree on it - a runtime folder inside it orphaned the server or made a twin. The
    folder is under the home from the password database (not $HOME), per host."""
    import pwd
    import socket as socket_module

    monkeypatch.delenv("GPUTUI_RUNTIME_DIR")
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    seen = set()
    for xdg in (None, tmp_path / "xdg-a", tmp_path / "xdg-b"):
        if xdg is None:
            monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
        else:
            xdg.mkdir(mode=0o700)
            monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
        monkeypatch.setenv("HOME", str(tmp_path / "some-other-home"))  # as `su` leaves it
        seen.add(default_lock_path())
    (path,) = seen
    assert path.parent.parent == home / ".local" / "state" / "gputui" / "run"
    assert path.parent.name == socket_module.gethostname().split(".")[0].replace(".", "_")
    assert not path.is_relative_to(Path(tempfile.gettempdir()))


def test_a_runtime_dir_setting_gets_a_private_subfolder_and_its_mode_is_left_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """N16: a path setting pointing at a shared folder (a team's, sticky) must not be chmodded."""
    shared = tmp_path / "team"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    monkeypatch.setenv("GPUTUI_RUNTIME_DIR", str(shared))
    monkeypatch.setenv("GPUTUI_DATA_DIR", str(shared))
    lock = UserLock()
    lock.acquire()
    lock.release()
    assert default_lock_path().parent == shared / f"gputui-{os.getuid()}"
    assert mode(default_lock_path().parent) == 0o700 and mode(default_lock_path()) == 0o600
    paths.private_dir(shared)  # the data folder named by a setting
    assert os.stat(shared).st_mode & 0o7777 == 0o1777


def test_a_planted_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("my thesis")
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    (run / "scheduler.lock").symlink_to(victim)
    with pytest.raises(SchedulerLocked, match="symbolic link"):
        UserLock(run / "scheduler.lock").acquire()
    assert victim.read_text() == "my thesis"


@as_root
def test_a_lock_file_of_another_user_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    planted = run / "scheduler.lock"
    planted.write_text("[/x] \x1b]2;owned\x07")
    os.chown(planted, OTHER_UID, OTHER_UID)
    with pytest.raises(SchedulerLocked, match=f"uid {OTHER_UID}, not to you"):
        UserLock(planted).acquire()
    os.chown(run, OTHER_UID, OTHER_UID)  # the folder itself someone else's
    with pytest.raises(SchedulerLocked, match="not to you"):
        UserLock(run / "other.lock").acquire()


def test_the_bundle_is_private_and_names_nobody(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    me = getpass.getuser()
    server = SimulatedServer(make_gpus(1))
    uuid = server.gpus[0].uuid
    server.allocate(uuid, 4242, 30 * 1024 * MiB, "alice", "python train.py --wandb-key s3cr3t")
    server.allocate(uuid, 4343, 100 * MiB, me, "python serve.py --api-key s3cr3t HF_TOKEN=hf_abc")
    snap = server.snapshot()
    findings = gpu_findings(snap, me) + [Finding("info", "env", "OPENAI_API_KEY=sk-xyz MY_SECRET_THING=1")]
    assert any("alice" in f.evidence for f in findings)  # what would leak
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"event": "failed", "error": "contention by pid 4242 (alice, 30 GiB)"}) + "\n")
    monkeypatch.setenv("HF_HOME", "/models/HF_TOKEN=hf_abc")
    path = write_bundle(tmp_path / "b.tar.gz", snap, findings, events)
    assert mode(path) == 0o600
    with tarfile.open(path) as tar:
        text = "".join(tar.extractfile(m).read().decode() for m in tar.getmembers())  # type: ignore[union-attr]
    assert "alice" not in text and "user-1" in text
    assert "s3cr3t" not in text and "hf_abc" not in text and "sk-xyz" not in text
    assert "python serve.py --api-key <redacted>" in text  # our own command, kept but for the secret


def test_secrets_are_redacted_by_shape() -> None:
    assert redact_secrets("HF_TOKEN=abc x") == "HF_TOKEN=<redacted> x"
    assert redact_secrets("--api-key abc --hf-token=def --model m") == "--api-key <redacted> --hf-token=<redacted> --model m"
    assert redact_secrets("nothing secret here --max-new-tokens 5") == "nothing secret here --max-new-tokens <redacted>"


def test_doctor_bundle_into_a_folder_and_an_unwritable_place(tmp_path: Path) -> None:
    def doctor(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gputui", "doctor", "--demo", "--no-subprocess", *args],
                              capture_output=True, text=True, timeout=120)

    out = doctor("--bundle", str(tmp_path))
    assert out.returncode in (0, 1), out.stderr
    (made,) = tmp_path.glob("gputui-bundle-*.tar.gz")
    assert mode(made) == 0o600
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = doctor("--bundle", str(blocker / "b.tar.gz"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("gputui: could not write the bundle") and len(out.stderr.splitlines()) == 1


def test_children_get_the_source_folder_only_from_a_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 29, item 5: a background server and every worker got PYTHONPATH=site-packages,
    which leaked into whatever they started."""
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setattr(paths, "__file__", "/opt/venv/lib/python3.12/site-packages/gputui/paths.py")
    assert "PYTHONPATH" not in paths.child_env({"X": "1"}) and paths.child_env({"X": "1"})["X"] == "1"
    monkeypatch.setattr(paths, "__file__", "/home/me/gputui/src/gputui/paths.py")
    assert paths.child_env()["PYTHONPATH"] == "/home/me/gputui/src"
    monkeypatch.setenv("PYTHONPATH", "/mine")
    assert paths.child_env()["PYTHONPATH"] == os.pathsep.join(["/home/me/gputui/src", "/mine"])
