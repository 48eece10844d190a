"""Kill a writer at random moments, then check what is on disk (run as a script by
tests/unit/test_crash_consistency.py, in a process of its own with no threads, so fork is safe).

python tests/crash_harness.py profile|chat RUNS SEED DIR   prints one JSON summary line.

profile: a child saves two versions of a profile in turn, forever; it is SIGKILLed after a
random delay. The file must then parse and equal one of the two versions (and so must .bak).
chat: a child reopens one conversation journal and appends numbered messages, reporting each
after it is on disk; it is SIGKILLed at a random moment. The journal must then read back as
exactly messages 0..n-1, in order, none missing, n >= the count the child reported.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

from gputui.chat.store import ConversationLog, read_transcript
from gputui.core.profiles import ModelEntry, Profile, dump_profile, load_profile, save_profile


def versions() -> tuple[Profile, Profile]:
    a = Profile("crash", (ModelEntry("glm", "chatglm3", "/models/glm", ("0",), max_context=4096),))
    big = tuple(ModelEntry(f"m{i}", "blip2", f"/models/b{i}" * 40, (f"GPU-{i:032x}",), dtype="float16",
                           generation={"temperature": 0.5 + i / 100}) for i in range(60))
    return a, Profile("crash", big, description="the second version, much longer " * 20)


def kill_after(child: int, ready_fd: int, delay: float) -> None:
    os.read(ready_fd, 1)  # the child is inside its loop
    time.sleep(delay)
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)


def profile_runs(runs: int, rng: random.Random, folder: Path) -> dict:
    a, b = versions()
    path = folder / "crash.toml"
    save_profile(a, path)
    texts = {dump_profile(a), dump_profile(b)}
    seen = {"old_or_a": 0, "new_or_b": 0}
    torn = 0
    for _ in range(runs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: save a, b, a, b... until killed
            os.close(r)
            os.write(w, b"x")
            i = 0
            while True:
                save_profile(b if i % 2 == 0 else a, path)
                i += 1
        os.close(w)
        kill_after(pid, r, rng.uniform(0, 0.004))
        os.close(r)
        for f in (path, path.with_name(path.name + ".bak")):
            if not f.exists():
                continue
            text = f.read_text(encoding="utf-8")
            if text not in texts:
                torn += 1
                continue
            load_profile(f, check_paths=False)  # and it parses
        seen["old_or_a" if path.read_text(encoding="utf-8") == dump_profile(a) else "new_or_b"] += 1
    leftovers = len([p for p in folder.iterdir() if p.name.startswith(".")])
    return {"case": "profile save", "runs": runs, "torn_files": torn, **seen, "temp_files_left": leftovers}


def chat_runs(runs: int, rng: random.Random, folder: Path) -> dict:
    path = folder / "conversation.jsonl"
    path.write_text(json.dumps({"type": "meta", "model": "glm", "kind": "chatglm3"}) + "\n")
    bad = 0
    torn_lines = 0
    lost = 0
    for _ in range(runs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: reopen the journal, append numbered messages until killed
            os.close(r)

            async def append_forever(w: int = w) -> None:
                log, t = ConversationLog.open(path)
                i = len(t.messages)
                os.write(w, b"x")
                while True:
                    await log.user_message(f"message {i} " + "x" * (i % 97))
                    os.write(w, i.to_bytes(4, "little"))
                    i += 1

            asyncio.run(append_forever())
        os.close(w)
        os.read(r, 1)
        time.sleep(rng.uniform(0, 0.01))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        reported = b""
        while chunk := os.read(r, 4096):
            reported += chunk
        os.close(r)
        confirmed = int.from_bytes(reported[-4:], "little") + 1 if len(reported) >= 4 else 0
        t = read_transcript(path)
        torn_lines = max(torn_lines, t.skipped_lines)
        want = [f"message {i} " + "x" * (i % 97) for i in range(len(t.messages))]
        if [m.content for m in t.messages] != want:
            bad += 1
        if len(t.messages) < confirmed:
            lost += 1
    final = read_transcript(path)
    return {"case": "chat append", "runs": runs, "journals_out_of_order_or_garbled": bad,
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
