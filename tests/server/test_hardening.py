"""Issue 31 on a real `gputui serve --demo`: an impostor gets nothing, requests on one connection
never wait for each other, what a client sends is bounded and checked, a new client joins with
the present, a stopped or mismatched server is one line and a way out. Each test failed on the
code before the fix (the note of session 7 says how each was checked)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gputui.api.views import ModelView
from gputui.core.requests import ModelRequest
from gputui.remote import wire
from gputui.remote.client import RemoteClient
from tests.server.conftest import Served, start_server
from tests.waiting import eventually

pytestmark = pytest.mark.slow
OTHER_UID = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to play another user")
GLM = ModelRequest("glm", "chatglm3", "demo:chatglm3", max_context=256, generation={"max_new_tokens": 6, "temperature": 0})


def gputui(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gputui", *args], capture_output=True, text=True, input=input,
                          timeout=300, env=env)


def impostor(path: Path, uid: int) -> tuple[int, int]:
    """Another user's fake server at `path`: a forked child that gave up root, listens, and
    writes to a pipe every byte a client sends it. Returns (pid, read end of the pipe)."""
    r, w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgid(uid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(path))
            s.listen(8)
            os.write(ready_w, b"1")
            os.close(ready_w)
            while True:
                conn, _ = s.accept()
                conn.sendall(b'{"hello": {"protocol": 1, "pid": 1, "version": "fake"}}\n')
                conn.settimeout(5)
                try:
                    while data := conn.recv(65536):
                        os.write(w, data)
                except OSError:
                    pass
                conn.close()
        finally:
            os._exit(0)
    os.close(w)
    os.close(ready_w)
    ready = os.read(ready_r, 1)  # b"" if the child could not bind
    os.close(ready_r)
    assert ready == b"1", "the other user could not bind its socket"
    return pid, r


def drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""


@as_root
def test_an_impostor_in_a_folder_another_user_made_first_gets_nothing(tmp_path: Path) -> None:
    """N1: GPUTUI_RUNTIME_DIR at a folder another uid made first (the old advice for a long
    socket path): the message went to their fake server, which replied, and chat said saved."""
    shared = Path(tempfile.mkdtemp(prefix="gputui-shared-"))
    os.chmod(shared, 0o777)
    env = {**os.environ, "GPUTUI_RUNTIME_DIR": str(shared)}
    mine = shared / f"gputui-{os.getuid()}"
    mine.mkdir(mode=0o700)
    os.chown(mine, OTHER_UID, OTHER_UID)  # they made "our" folder first
    os.chmod(mine, 0o777)
    pid, got = impostor(mine / "demo.sock", OTHER_UID)
    try:
        out = gputui("chat", "--demo", "chatglm3", input="my secret plan\n", env=env)
        ps = gputui("ps", "--demo", "--json", env=env)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert drain(got) == b""  # not a byte, not even the hello
    assert out.returncode == 2 and "Traceback" not in out.stderr and f"belongs to uid {OTHER_UID}" in out.stderr
    assert "saved" not in out.stderr + out.stdout
    assert ps.returncode == 2 and f"belongs to uid {OTHER_UID}" in ps.stderr and ps.stdout == ""
    import shutil

    shutil.rmtree(shared, ignore_errors=True)


@as_root
async def test_a_socket_served_by_another_uid_is_refused_before_a_byte_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The peer-uid check itself: the socket file looks like ours (owner and mode), but the
    process behind it is someone else's (SO_PEERCRED)."""
    from gputui.paths import private_runtime_dir
    from gputui.remote.lifecycle import find

    shared = Path(tempfile.mkdtemp(prefix="gputui-peer-"))
    os.chmod(shared, 0o755)
    monkeypatch.setenv("GPUTUI_RUNTIME_DIR", str(shared))
    run = private_runtime_dir()
    os.chmod(run, 0o777)  # so the other uid can bind in it; tightened again below
    pid, got = impostor(run / "demo.sock", OTHER_UID)
    os.chown(run / "demo.sock", os.getuid(), os.getgid())
    os.chmod(run, 0o700)
    try:
        with pytest.raises(Exception, match=f"served by uid {OTHER_UID}, not by you"):
            await find(demo=True)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        import shutil

        shutil.rmtree(shared, ignore_errors=True)
    assert drain(got) == b""


async def test_an_unload_on_the_same_connection_is_not_behind_the_load_it_cancels(
        private_folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """N4: the server awaited each command before reading the next line of a connection, so a
    dashboard's unload of a loading model waited for that load (21.6 s)."""
    monkeypatch.setenv("GPUTUI_FAULT_PAUSE", "loading_weights:600")  # every load hangs in its weights
    served = start_server(private_folders)
    try:
        client = await RemoteClient.connect(served.socket)
        load = asyncio.ensure_future(client.load(GLM))
        await eventually(lambda: (m := client.model("glm")) is not None and m.stage == "loading_weights", 120,
                         "the load never reached its weights")
        pids = await client._call("worker_pids")  # a read on the same connection: answered now
        assert list(pids.values()) == [] or "glm" in pids.values()
        result = await asyncio.wait_for(client.unload("glm"), 120)  # far less than the 600 s pause
        view = await asyncio.wait_for(load, 60)
        assert view.state.value in ("failed", "unloaded") and result.name == "glm"
        assert client.model("glm").state.value == "unloaded"
        await client.close()
    finally:
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(60)


async def test_what_a_client_sends_is_checked_on_its_request_and_the_connection_goes_on(served: Served) -> None:
    """N12, N17, N18, N19: an over-size request, Infinity, params of the wrong type, a NaN or
    zero that every reply would fail on: each an error on that request id, never a dropped
    connection, a dead stream task or a silent end."""
    reader, writer = await asyncio.open_unix_connection(str(served.socket), limit=1 << 20)
    writer.write(b'{"hello": {"protocol": 1}}\n')
    assert "hello" in json.loads(await reader.readline())

    async def ask(raw: bytes) -> dict:  # type: ignore[type-arg]
        writer.write(raw + b"\n")
        await writer.drain()
        return json.loads(await reader.readline())  # type: ignore[no-any-return]

    big = b'{"id": 7, "op": "chat", "args": {"name": "glm", "request": {"messages": [{"role": "user", "content": "' \
          + b"x" * (wire.MAX_LINE_BYTES + 100) + b'"}]}}}'
    reply = await ask(big)
    assert reply.get("id") == 7, reply
    assert reply["id"] == 7 and reply["error"]["type"] == "too_large" and "/clear" in reply["error"]["message"]
    reply = await ask(b'{"id": 8, "op": "events", "args": {"since": 1e300}}')
    assert reply["id"] == 8 and "since" in reply["error"]["message"]
    for rid, params, says in ((9, '{"temperature": "hot"}', "temperature"), (10, '{"top_p": 0}', "top_p"),
                              (11, '{"max_new_tokens": -1}', "max_new_tokens"), (12, '{"seed": "x"}', "seed"),
                              (13, '[1]', "params must be an object")):
        reply = await ask(b'{"id": %d, "op": "chat", "args": {"name": "glm", "request": {"params": %s}}}'
                          % (rid, params.encode()))
        assert reply["id"] == rid and says in reply["error"]["message"], reply
    reply = await ask(b'{"id": 14, "op": "load", "args": {"request": {"name": "x", "kind": "chatglm3", '
                      b'"path": "demo:chatglm3", "generation": {"temperature": 1e-320, "top_p": 0}}}}')
    assert reply["id"] == 14 and "top_p" in reply["error"]["message"]
    reply = await ask(b'{"id": 15, "op": "models", "args": {}}')
    assert reply == {"id": 15, "result": [], "seq": reply["seq"]}  # the same connection still answers
    writer.write(b'{"id": 16, "op": "events", "args": {"since": Infinity}}\n')  # not JSON: the connection ends
    await writer.drain()
    last = json.loads(await reader.readline())
    assert "Infinity is not a JSON value" in last["error"]["message"]
    writer.close()


def test_a_half_closed_client_still_gets_its_answer(served: Served) -> None:
    """N18: `printf '...' | nc -U` sends, closes its side, and reads: it got nothing."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(served.socket))
    s.sendall(b'{"hello": {"protocol": 1}}\n{"id": 1, "op": "unload", "args": {"name": "nothing"}}\n'
              b'{"id": 2, "op": "models"}\n{"id": 3, "op": "chat", "args": {"name": "nothing", "request": {}}}\n')
    s.shutdown(socket.SHUT_WR)
    lines = [json.loads(x) for x in s.makefile("rb").read().splitlines()]
    s.close()
    answers: dict[int, list[dict]] = {}  # type: ignore[type-arg]
    for m in lines:
        answers.setdefault(m.get("id"), []).append(m)
    assert "no model named" in answers[1][0]["error"]["message"] and answers[2][0]["result"] == []
    assert answers[3][0]["item"]["event"] == "error" and answers[3][-1] == {"id": 3, "end": True}  # a chat too


async def test_a_new_client_joins_with_the_present_and_never_replays_old_states(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """N13: a client attaching after a load replayed ready -> queued -> loading -> ready from the
    event ring; a `gputui chat` line was once refused 'queued to load' on a ready model."""
    first = await RemoteClient.connect(served.socket)
    assert (await first.load(GLM)).ready
    await first.close()
    seen: list[ModelView] = []
    original = RemoteClient._set_views

    def recording(self: RemoteClient, views: dict[str, ModelView]) -> None:
        seen.extend(views.values())
        original(self, views)

    monkeypatch.setattr(RemoteClient, "_set_views", recording)
    for _ in range(5):
        client = await RemoteClient.connect(served.socket)
        await client._call("info")  # answered with the server's newest event: caught up to it after
        await client.close()
    assert seen and all(v.ready for v in seen if v.name == "glm"), [v.state.value for v in seen]


def test_a_stopped_server_is_one_line_and_stop_force_ends_it(private_folders: Path) -> None:
    """N14: ps and stop printed tracebacks against a SIGSTOPped server, and a client waited for ever."""
    served = start_server(private_folders)
    os.kill(served.proc.pid, signal.SIGSTOP)
    try:
        ps = gputui("ps", "--demo")
        assert ps.returncode == 2 and "Traceback" not in ps.stderr and len(ps.stderr.strip().splitlines()) == 1
        assert "did not answer" in ps.stderr and "gputui stop --force --demo" in ps.stderr
        stop = gputui("stop", "--demo", "--force")
        assert stop.returncode == 0 and f"server pid {served.proc.pid} stopped" in stop.stdout
        assert served.proc.wait(60) == 0  # SIGTERM then SIGCONT: it unloaded and exited cleanly
    finally:
        if served.proc.poll() is None:
            os.kill(served.proc.pid, signal.SIGKILL)
            served.proc.wait()


def test_stop_ends_cleanly_every_time(private_folders: Path) -> None:
    """Issue 30: `gputui stop` ended in a ServerGone traceback in 2 of 5-6 runs (the server
    closed before its answer to shutdown was out)."""
    for _ in range(5):
        served = start_server(private_folders)
        client = asyncio.run(_load_and_leave(served.socket))
        del client
        out = gputui("stop", "--demo")
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        assert f"server pid {served.proc.pid} stopped" in out.stdout
        assert served.proc.wait(60) == 0


async def _load_and_leave(path: Path) -> None:
    client = await RemoteClient.connect(path)
    assert (await client.load(GLM)).ready
    await client.close()


def test_a_second_server_is_refused_wherever_it_is_started_from(served: Served, tmp_path: Path) -> None:
    """N2/N3: with XDG_RUNTIME_DIR removed (logout) or different (su, cron), the old runtime
    folder moved and a second server started beside the first."""
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "gone")}
    out = gputui("serve", "--demo", env=env)
    assert out.returncode == 2 and f"already running for this user (pid {served.proc.pid})" in out.stderr
    env.pop("XDG_RUNTIME_DIR")
    ps = gputui("ps", "--demo", "--json", env=env)
    assert json.loads(ps.stdout)["server"]["pid"] == served.proc.pid


async def test_a_ready_worker_names_its_user_and_model_for_other_users_tools(served: Served) -> None:
    """Issue 30, item 9: nvidia-smi, nvitop and gpustat show whose model holds a GPU."""
    import getpass

    client = await RemoteClient.connect(served.socket)
    view = await client.load(GLM)
    assert view.ready and view.pid
    cmdline = Path(f"/proc/{view.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert cmdline.startswith(f"gputui: {getpass.getuser()}/glm (python -m gputui.worker)"), cmdline
    # its own session: Ctrl-C in the server's terminal (its process group) never reaches it
    assert os.getsid(view.pid) == view.pid != os.getsid(served.proc.pid)
    await client.close()


def test_ctrl_c_on_a_foreground_server_unloads_cleanly_and_never_reaches_the_workers(private_folders: Path) -> None:
    """Issue 30: Ctrl-C goes to the terminal's whole process group; the workers were in it and
    died of it ("blip2 crashed ... returncode=-6") instead of being unloaded."""
    served = start_server(private_folders)  # a process group of its own, as a terminal's job
    view = asyncio.run(_load_and_return(served.socket))
    os.killpg(served.proc.pid, signal.SIGINT)
    assert served.proc.wait(60) == 0
    out = served.output()
    assert "crashed" not in out and "glm unloaded" in out and "returncode=0" in out, out[-2000:]
    asyncio.run(eventually(lambda: not Path(f"/proc/{view.pid}").exists(), 60, "the worker outlived its server"))


async def _load_and_return(path: Path) -> ModelView:
    client = await RemoteClient.connect(path)
    try:
        view = await client.load(GLM)
        assert view.ready
        return view
    finally:
        await client.close()


async def test_a_dashboards_client_comes_back_when_the_server_does(private_folders: Path) -> None:
    """Issue 30: dashboards never reconnected after the server restarted ("follow the scheduler
    failed: ServerGone")."""
    from gputui.remote.lifecycle import find
    from gputui.remote.reconnecting import ReconnectingClient

    first = start_server(private_folders)
    client = ReconnectingClient(await RemoteClient.connect(first.socket), lambda: find(True))
    seen: list[str] = []

    async def follow() -> None:
        async for ev in client.events(client.last_seq):
            seen.append(ev.data.get("event") if ev.type == "timeline" else ev.type)

    follower = asyncio.ensure_future(follow())
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(60) == 0
    await eventually(lambda: "server_gone" in seen, 60, "the client did not notice the server go")
    second = start_server(private_folders)
    try:
        await eventually(lambda: "reconnected" in seen, 120, "the client did not come back")
        assert seen[seen.index("server_gone"):][1:3] == ["reset", "reconnected"]
        assert client.server["pid"] == second.proc.pid
        assert (await client.load(GLM)).ready  # commands go to the new server
    finally:
        follower.cancel()
        await client.close()
        second.proc.send_signal(signal.SIGTERM)
        second.proc.wait(60)
