"""The OpenAI-compatible API (issue 26) of a real `gputui serve --demo --api`, used as other
programs use it: the official `openai` client (sync, async, streaming) over the Unix socket, and
`curl --unix-socket`. A tiny real ChatGLM3 answers on the CPU."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gputui.core.requests import ModelRequest
from gputui.remote.client import RemoteClient
from tests.server.conftest import Served, start_server
from tests.waiting import wait_until

openai = pytest.importorskip("openai")
httpx2 = pytest.importorskip("httpx2")  # the transport openai's own client is built on

pytestmark = pytest.mark.slow
GLM = ModelRequest("glm", "chatglm3", "demo:chatglm3", max_context=512)
BASE = "http://localhost/v1"
HI = [{"role": "user", "content": "hello there"}]


async def serve_with_api(private_folders: Path) -> tuple[Served, Path]:
    served = start_server(private_folders, "--api")
    remote = await RemoteClient.connect(served.socket)
    try:
        view = await remote.load(GLM)
        assert view.ready, view.error
        return served, Path(remote.server["api"]["socket"])
    finally:
        await remote.close()


@pytest.fixture
async def api(private_folders: Path) -> AsyncIterator[tuple[Served, Path]]:
    served, sock = await serve_with_api(private_folders)
    yield served, sock
    served.proc.terminate()
    served.proc.wait(60)


@pytest.fixture
async def slow_api(private_folders: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Served, Path]]:
    """The same, with each token held 20 ms (worker/faults.py): the tiny model's whole reply would
    otherwise be written before a client that leaves could be noticed."""
    monkeypatch.setenv("GPUTUI_FAULT_PAUSE", "token:0.02")
    served, sock = await serve_with_api(private_folders)
    yield served, sock
    served.proc.terminate()
    served.proc.wait(60)


def sync_client(sock: Path) -> Any:
    return openai.OpenAI(base_url=BASE, api_key="unused", max_retries=0,
                         http_client=openai.DefaultHttpx2Client(transport=httpx2.HTTPTransport(uds=str(sock))))


def curl(sock: Path, path: str, body: Any = None) -> tuple[int, Any]:
    args = ["curl", "-s", "--unix-socket", str(sock), "-w", "\n%{http_code}", f"{BASE}{path}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary",
                 body if isinstance(body, str) else json.dumps(body)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120).stdout
    text, _, code = out.rpartition("\n")
    return int(code), json.loads(text)


async def test_the_official_client_lists_chats_and_streams_over_the_socket(api: tuple[Served, Path]) -> None:
    _served, sock = api
    client = sync_client(sock)
    assert [m.id for m in client.models.list().data] == ["glm"]
    whole = await asyncio.to_thread(client.chat.completions.create, model="glm", messages=HI, max_tokens=6,
                                    temperature=0, seed=1)
    choice = whole.choices[0]
    assert whole.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length") and whole.usage is not None
    assert 1 <= whole.usage.completion_tokens <= 6 and whole.usage.prompt_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    aclient = openai.AsyncOpenAI(base_url=BASE, api_key="unused", max_retries=0,
                                 http_client=openai.DefaultAsyncHttpx2Client(
                                     transport=httpx2.AsyncHTTPTransport(uds=str(sock))))
    stream = await aclient.chat.completions.create(model="glm", messages=HI, max_tokens=6, temperature=0, seed=1,
                                                   stream=True, stream_options={"include_usage": True})
    pieces, finish, used = [], None, None
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        elif chunk.usage is not None:
            used = chunk.usage
    await aclient.close()
    assert "".join(pieces) == choice.message.content  # greedy: the same words, streamed
    assert finish == choice.finish_reason and used is not None and used.completion_tokens == whole.usage.completion_tokens


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl on this machine")
async def test_errors_come_in_openais_shape_with_the_right_status(api: tuple[Served, Path]) -> None:
    served, sock = api
    code, body = curl(sock, "/models")
    assert code == 200 and body["object"] == "list" and body["data"][0]["id"] == "glm"
    cases = [
        ({"model": "nope", "messages": HI}, 404, "model", "model_not_found"),
        ({"model": "glm", "messages": HI, "n": 2}, 400, "n", "invalid_value"),
        ({"model": "glm", "messages": HI, "max_tokens": 0}, 400, "max_tokens", "invalid_value"),
        ({"model": "glm", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role", "invalid_value"),
        ({"model": "glm", "messages": HI, "tools": [{"type": "function"}]}, 400, "tools", "invalid_value"),
        ("{not json", 400, "body", "invalid_value"),
    ]
    for request, status, param, code_name in cases:
        code, body = curl(sock, "/chat/completions", request)
        err = body["error"]
        assert (code, err["param"], err["code"]) == (status, param, code_name), (request, body)
        assert err["type"] == "invalid_request_error" and err["message"]
    huge = served.log.parent / "huge.json"  # over the 24 MiB body limit
    huge.write_text(json.dumps({"model": "glm", "messages": [{"role": "user", "content": "x" * (25 << 20)}]}))
    code, body = curl(sock, "/chat/completions", f"@{huge}")
    assert code == 413 and body["error"]["code"] == "413", body


async def test_stop_strings_end_the_reply_where_they_start(api: tuple[Served, Path]) -> None:
    _served, sock = api
    client = sync_client(sock)
    free = await asyncio.to_thread(client.chat.completions.create, model="glm", messages=HI, max_tokens=12,
                                   temperature=0, seed=1)
    text = free.choices[0].message.content
    assert len(text) >= 4, text
    stop = text[2:4]  # a piece of what it would say: it must end just before it
    cut = await asyncio.to_thread(client.chat.completions.create, model="glm", messages=HI, max_tokens=12,
                                  temperature=0, seed=1, stop=[stop])
    assert cut.choices[0].message.content == text[:text.find(stop)] and cut.choices[0].finish_reason == "stop"


async def test_a_client_that_goes_away_stops_its_reply(slow_api: tuple[Served, Path]) -> None:
    served, sock = slow_api
    request = json.dumps({"model": "glm", "messages": HI, "max_tokens": 200, "stream": True,
                          "ignore_eos": True}).encode()  # vLLM's extension: no early end of its own
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(str(sock))
    conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(request), request))
    seen = b""
    while seen.count(b"data: ") < 4:  # a few tokens in
        seen += conn.recv(65536)
    conn.close()
    wait_until(lambda: "the client went away" in served.output(), 120, "the server never noticed the client leave")
    line = next(x for x in served.output().splitlines() if "the client went away" in x)
    tokens = int(line.split("stopped after ")[1].split()[0])
    assert tokens < 200 and "(cancelled)" in line, line


@pytest.mark.skipif(os.getuid() != 0, reason="playing another user needs root (setuid)")
def test_another_user_who_reaches_the_socket_is_refused(api: tuple[Served, Path]) -> None:
    """The socket is 0600 in a 0700 folder; if both were opened up by mistake, the peer-uid check
    still answers no one but the owner."""
    _served, sock = api
    folder_mode, sock_mode = sock.parent.stat().st_mode, sock.stat().st_mode
    chain = [p for p in [sock.parent, *sock.parent.parents] if p != Path("/")]
    modes = {p: p.stat().st_mode for p in chain}
    try:
        for p in chain:
            os.chmod(p, modes[p] | 0o011)  # traversable by others
        os.chmod(sock.parent, folder_mode | 0o777)
        os.chmod(sock, sock_mode | 0o777)
        code = ("import socket, sys\ns = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
                "s.sendall(b'GET /v1/models HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n"
                "print(s.recv(4096).decode().splitlines()[0])")
        out = subprocess.run(["setpriv", "--reuid=12345", "--regid=12345", "--clear-groups", sys.executable, "-c",
                              code, str(sock)], capture_output=True, text=True, timeout=60)
        assert out.stdout.startswith("HTTP/1.1 403"), out.stdout + out.stderr
    finally:
        os.chmod(sock, sock_mode)
        for p, m in modes.items():
            os.chmod(p, m)


def test_gputui_api_says_how_to_reach_it(api: tuple[Served, Path]) -> None:
    _served, sock = api
    out = subprocess.run([sys.executable, "-m", "gputui", "api", "--demo", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"schema_version": 1, "socket": str(sock), "base_url": BASE, "tcp_url": None,
                                      "token_file": None}
    text = subprocess.run([sys.executable, "-m", "gputui", "api", "--demo"], capture_output=True, text=True,
                          timeout=120).stdout
    assert f"curl --unix-socket {sock}" in text and "ssh -N -L 8000:" in text


def test_gputui_api_without_a_server_says_so_and_exits_1(private_folders: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "gputui", "api", "--demo"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1 and "no gputui server is running" in out.stderr


async def test_metrics_parse_and_count_what_was_served(api: tuple[Served, Path]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    _served, sock = api
    client = sync_client(sock)
    done = await asyncio.to_thread(client.chat.completions.create, model="glm", messages=HI, max_tokens=5,
                                   temperature=0)
    via_cli = subprocess.run([sys.executable, "-m", "gputui", "metrics", "--demo"], capture_output=True, text=True,
                             timeout=120)
    assert via_cli.returncode == 0, via_cli.stderr
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(via_cli.stdout) for s in family.samples}
    assert samples[("gputui_api_requests_total", (("model", "glm"), ("status", "ok")))] == 1
    assert samples[("gputui_generated_tokens_total", (("model", "glm"),))] == done.usage.completion_tokens
    assert samples[("gputui_model_state", (("model", "glm"), ("state", "ready")))] == 1
    assert samples[("gputui_model_state", (("model", "glm"), ("state", "loading")))] == 0
    assert samples[("gputui_time_to_first_token_seconds_count", (("model", "glm"),))] == 1
    gpus = [k for k in samples if k[0] == "gputui_gpu_memory_total_bytes"]
    assert len(gpus) == 2 and all(samples[k] > 0 for k in gpus)  # the demo's two simulated GPUs


def bomb_data_url() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")  # 1-bit, all black: a few KiB
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def png_data_url() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def with_image(text: str, url: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]}]


async def test_images_blip2_answers_and_chatglm3_discusses_what_blip2_saw(api: tuple[Served, Path]) -> None:
    served, sock = api
    remote = await RemoteClient.connect(served.socket)
    try:
        assert (await remote.load(ModelRequest("blip2", "blip2", "demo:blip2"))).ready
    finally:
        await remote.close()
    client = sync_client(sock)
    seen = await asyncio.to_thread(client.chat.completions.create, model="blip2",
                                   messages=with_image("what colour is it?", png_data_url()), max_tokens=4)
    assert seen.choices[0].finish_reason in ("stop", "length") and seen.usage.completion_tokens >= 1
    plain = await asyncio.to_thread(client.chat.completions.create, model="glm",
                                    messages=[{"role": "user", "content": "what colour is it?"}], max_tokens=2)
    discussed = await asyncio.to_thread(client.chat.completions.create, model="glm",
                                        messages=with_image("what colour is it?", png_data_url()), max_tokens=2)
    # the description came in as context: the same question, a longer prompt
    assert discussed.usage.prompt_tokens > plain.usage.prompt_tokens + 5
    assert not any((sock.parent / "api-images").iterdir())  # the image's file is gone with its reply


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl on this machine")
async def test_images_the_api_cannot_use_are_refused_saying_why(api: tuple[Served, Path], tmp_path: Path) -> None:
    _served, sock = api
    cases = [
        (with_image("hi", png_data_url()), "reads no images"),  # no BLIP2 loaded to describe it
        (with_image("hi", "https://example.com/cat.png"), "never downloads"),
        (with_image("hi", f"file://{tmp_path}/none.png"), "not a file you can read"),
        (with_image("hi", "data:image/png;base64,@@@"), "not valid base64"),
        (with_image("hi", "data:image/png;base64,aGVsbG8="), "not an image PIL can read"),
        # a decompression bomb: 400 megapixels in a few KiB, refused from its header, never decoded
        (with_image("hi", bomb_data_url()), "20000x20000 is too large"),
        ([*with_image("a", png_data_url()), {"role": "assistant", "content": "b"}, *HI], "one image"),
    ]
    for messages, says in cases:
        code, body = curl(sock, "/chat/completions", {"model": "glm", "messages": messages})
        assert code == 400 and says in body["error"]["message"], body


def http(url: str, token: str | None = None) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


async def test_over_tcp_only_the_token_in_the_users_own_file_opens_it(private_folders: Path) -> None:
    served = start_server(private_folders, "--api", "--api-listen", "127.0.0.1:0")
    try:
        info = json.loads(subprocess.run([sys.executable, "-m", "gputui", "api", "--demo", "--json"],
                                         capture_output=True, text=True, timeout=120).stdout)
        token_file = Path(info["token_file"])
        assert info["tcp_url"].startswith("http://127.0.0.1:") and oct(token_file.stat().st_mode & 0o777) == "0o600"
        token = token_file.read_text().strip()
        assert len(token) >= 40
        models = f"{info['tcp_url']}/models"
        assert http(models) == 401 and http(models, "wrong") == 401 and http(models, token[:-1]) == 401
        assert http(models, token) == 200
        client = openai.OpenAI(base_url=info["tcp_url"], api_key=token, max_retries=0)
        assert client.models.list().data == []  # nothing loaded: an empty list, not an error
    finally:
        served.proc.terminate()
        served.proc.wait(60)


def test_a_tcp_address_other_machines_reach_needs_its_own_flag(private_folders: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "gputui", "serve", "--demo", "--api", "--api-listen", "0.0.0.0:0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--api-listen-anywhere" in out.stderr and "Traceback" not in out.stderr


async def test_past_the_queue_limit_a_request_is_told_to_come_back(private_folders: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import aiohttp

    from gputui.paths import settings_path

    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text("api_queue = 1\n")
    monkeypatch.setenv("GPUTUI_FAULT_PAUSE", "token:0.02")  # the first reply lasts a few seconds
    served, sock = await serve_with_api(private_folders)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session:
            long = {"model": "glm", "messages": HI, "max_tokens": 100, "ignore_eos": True, "stream": True}
            first = await session.post(f"{BASE}/chat/completions", json=long)
            await first.content.readline()  # under way
            async with session.post(f"{BASE}/chat/completions", json={"model": "glm", "messages": HI}) as second:
                body = await second.json()
                assert second.status == 429 and second.headers["Retry-After"] == "2", body
                assert body["error"]["code"] == "queue_full" and body["error"]["type"] == "rate_limit_error"
            async with session.get("http://localhost/metrics") as m:
                text = await m.text()
            assert 'gputui_api_requests_under_way{model="glm"} 1.0' in text
            assert 'gputui_api_requests_total{model="glm",status="queue_full"} 1.0' in text
            await first.read()
            first.release()
            async with session.post(f"{BASE}/chat/completions",
                                    json={"model": "glm", "messages": HI, "max_tokens": 2}) as third:
                assert third.status == 200  # the slot is free again
    finally:
        served.proc.terminate()
        served.proc.wait(60)


async def test_a_model_the_api_load_profile_defines_is_loaded_for_its_first_request(private_folders: Path) -> None:
    from gputui.paths import settings_path

    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text('api_load = "demo"\n')  # the demo profile: chatglm3 and blip2
    served = start_server(private_folders, "--api")
    try:
        remote = await RemoteClient.connect(served.socket)
        sock = Path(remote.server["api"]["socket"])
        assert remote.models() == []  # nothing loaded yet
        client = sync_client(sock)
        assert sorted(m.id for m in client.models.list().data) == ["blip2", "chatglm3"]
        answer = await asyncio.to_thread(client.chat.completions.create, model="chatglm3", messages=HI, max_tokens=3)
        assert answer.usage.completion_tokens >= 1
        again = await RemoteClient.connect(served.socket)
        view = again.model("chatglm3")
        await again.close()
        assert view is not None and view.ready  # loaded through the fixed order, and it stays
        code, body = curl(sock, "/chat/completions", {"model": "nope", "messages": HI})
        assert code == 404 and "blip2" in body["error"]["message"]  # says what could be asked for
        await remote.close()
    finally:
        served.proc.terminate()
        served.proc.wait(60)
