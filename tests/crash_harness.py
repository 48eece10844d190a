"""Kill a writer in every phase of a write, then check what is on disk (run as a script by
tests/unit/test_crash_consistency.py, in a process of its own with no threads, so fork is safe).

python tests/crash_harness.py profile|chat RUNS SEED DIR   prints one JSON summary line.

Kills are placed, not hoped for: a forked child wraps the system calls of a write (os.fsync,
os.replace; a torn write is made by hand) and SIGKILLs itself at a chosen one, after telling the
parent, through a pipe, which phase it is in. So every phase is hit on any machine speed, and
the summary proves it (`kills_landed` per phase, each one a child that reported its phase and
died of SIGKILL). RUNS more kills land at random moments (0-50 ms after the child starts), for
what the phases do not name.

profile: the file must then parse and be the old version if the kill came before the new one
was renamed into place, the new one after; .bak likewise one of the two.
chat: the journal must read back as exactly messages 0..n-1, in order, none missing, n >= the
count the child had reported as on disk, whatever was torn in between.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from gputui.core.profiles import Profile, dump_profile, load_profile, save_profile
from gputui.core.requests import ModelRequest
from gputui.journal import ConversationLog, read_transcript

RANDOM_WINDOW_S = 0.05

# The system calls of a profile save of an existing file, in order (core/atomic.py):
# fsync(temp), fsync(backup temp), replace(backup), replace(file), fsync(folder).
# A phase is "die just before call number N", or after the last one.
PROFILE_PHASES = {
    "temp written, not synced": 1,
    "temp synced, backup not synced": 2,
    "backup synced, not in place": 3,
    "backup in place, new file not in place": 4,
    "new file in place, folder not synced": 5,
    "saved": 6,
}
NEW_IN_PLACE_FROM = 5  # phases at or after this call have the new version in place

CHAT_PHASES = ("written, not synced", "synced, not reported", "torn line")


def versions() -> tuple[Profile, Profile]:
    a = Profile("crash", (ModelRequest("glm", "chatglm3", "/models/glm", ("0",), max_context=4096),))
    big = tuple(ModelRequest(f"m{i}", "blip2", f"/models/b{i}" * 40, (f"GPU-{i:032x}",), dtype="float16",
                           generation={"temperature": 0.5 + i / 100}) for i in range(60))
    return a, Profile("crash", big, description="the second version, much longer " * 20)


def die_at(call_number: int, phase: str, report_fd: int) -> None:
    """In the child: SIGKILL ourselves just before the `call_number`-th fsync/replace (or at
    once after the last, for a number past them), saying first which phase it is."""
    count = 0

    def wrap(real: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object) -> object:
            nonlocal count
            count += 1
            if count == call_number:
                die(phase, report_fd)
            return real(*args)
        return call

    os.fsync = wrap(os.fsync)  # type: ignore[assignment]
    os.replace = wrap(os.replace)  # type: ignore[assignment]


def die(phase: str, report_fd: int) -> None:
    os.write(report_fd, phase.encode() + b"\n")
    os.kill(os.getpid(), signal.SIGKILL)


def run_child(body: Callable[[int], None], delay: float | None) -> tuple[str | None, bool, bytes]:
    """Fork; the child runs body(report_fd). Returns (phase it reported, killed by SIGKILL,
    everything it wrote to the pipe). With `delay`, the parent kills it after that long."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            body(w)
        finally:
            os._exit(0)
    os.close(w)
    if delay is not None:
        os.read(r, 1)  # the child is under way
        import time

        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    lines = [x for x in out.split(b"\n") if x and not x.startswith(b"#")]
    phase = lines[-1].decode() if delay is None and lines else None
    return phase, killed, out


def profile_runs(runs: int, rng: random.Random, folder: Path) -> dict:
    a, b = versions()
    path = folder / "crash.toml"
    save_profile(a, path)
    texts = {dump_profile(a): "a", dump_profile(b): "b"}
    landed = {phase: 0 for phase in PROFILE_PHASES}
    wrong_version = torn = 0

    def check(expect_new: bool | None, new: str) -> None:
        nonlocal wrong_version, torn
        for f in (path, path.with_name(path.name + ".bak")):
            if f.exists():
                text = f.read_text(encoding="utf-8")
                if text not in texts:
                    torn += 1
                    continue
                load_profile(f, check_paths=False)  # and it parses
        now = texts.get(path.read_text(encoding="utf-8"))
        if expect_new is not None and (now == new) != expect_new:
            wrong_version += 1

    i = 0
    for phase, call_number in PROFILE_PHASES.items():
        for _ in range(max(1, runs // 50)):
            target, name = (b, "b") if texts.get(path.read_text(encoding="utf-8")) == "a" else (a, "a")

            def body(w: int, target: Profile = target, phase: str = phase, n: int = call_number) -> None:
                die_at(n, phase, w)
                save_profile(target, path)
                die(phase, w)  # past the last call: "saved"

            got, killed, _ = run_child(body, None)
            landed[phase] += int(killed and got == phase)
            check(call_number >= NEW_IN_PLACE_FROM, name)
            i += 1
    for _ in range(runs):
        def saver(w: int) -> None:
            os.write(w, b"#\n")
            k = 0
            while True:
                save_profile(b if k % 2 == 0 else a, path)
                k += 1

        run_child(saver, rng.uniform(0, RANDOM_WINDOW_S))
        check(None, "")
    leftovers = len([p for p in folder.iterdir() if p.name.startswith(".")])
    return {"case": "profile save", "runs": runs + i, "kills_landed": landed, "torn_files": torn,
            "wrong_version": wrong_version, "temp_files_left": leftovers}


def chat_runs(runs: int, rng: random.Random, folder: Path) -> dict:
    path = folder / "conversation.jsonl"
    path.write_text(json.dumps({"type": "meta", "model": "glm", "kind": "chatglm3"}) + "\n")
    landed = {phase: 0 for phase in CHAT_PHASES}
    bad = lost = torn_lines = 0

    def message(i: int) -> str:
        return f"message {i} " + "x" * (i % 97)

    def appender(phase: str | None) -> Callable[[int], None]:
        def body(w: int) -> None:
            async def append() -> None:
                log, t = ConversationLog.open(path)
                i = len(t.messages)
                os.write(w, b"#\n")
                if phase == "torn line":  # half a record on disk, as a full disk or a crash leaves it
                    line = json.dumps({"type": "message", "role": "user", "content": message(i)})
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                    os.write(fd, line[: len(line) // 2].encode())
                    die(phase, w)
                if phase == "written, not synced":
                    die_at(1, phase, w)
                while True:
                    await log.user_message(message(i))
                    os.write(w, f"#{i}\n".encode())
                    if phase == "synced, not reported":
                        die(phase, w)
                    i += 1

            asyncio.run(append())
        return body

    def check(out: bytes) -> None:
        nonlocal bad, lost, torn_lines
        reported = [int(x[1:]) for x in out.split(b"\n") if x.startswith(b"#") and x[1:].isdigit()]
        confirmed = reported[-1] + 1 if reported else 0
        t = read_transcript(path)
        torn_lines = max(torn_lines, t.skipped_lines)
        if [m.content for m in t.messages] != [message(i) for i in range(len(t.messages))]:
            bad += 1
        if len(t.messages) < confirmed:
            lost += 1

    for phase in CHAT_PHASES:
        for _ in range(max(1, runs // 50)):
            got, killed, out = run_child(appender(phase), None)
            landed[phase] += int(killed and got == phase)
            check(out)
    for _ in range(runs):
        _, _, out = run_child(appender(None), rng.uniform(0, RANDOM_WINDOW_S))
        check(out)
    final = read_transcript(path)
    return {"case": "chat append", "runs": runs, "kills_landed": landed, "journals_out_of_order_or_garbled": bad,
            "runs_losing_a_reported_message": lost, "most_torn_lines_seen": torn_lines,
            "messages_at_end": len(final.messages)}


def main() -> None:
    kind, runs, seed, folder = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    os.environ["GPUTUI_DATA_DIR"] = str(folder)
    rng = random.Random(seed)
    result = profile_runs(runs, rng, folder) if kind == "profile" else chat_runs(runs, rng, folder)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
