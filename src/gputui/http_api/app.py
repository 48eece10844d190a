"""The OpenAI-compatible API of the per-user server (`gputui serve --api`), on a Unix socket beside
the control socket: 0600 in the user's 0700 runtime folder, and every connection's peer uid
checked (SO_PEERCRED), so on a shared machine no other user can reach the models - where Ollama,
LM Studio and vLLM listen on TCP ports any local user can open. `ssh -L 8000:SOCKET host` gives
a laptop a base URL with no port open on the host.

aiohttp, because it serves on the server's own asyncio loop, takes a socket we bound ourselves
(web.SockSite: 0600 from the start), and exposes each request's transport, hence its socket for
the peer-uid check (uvicorn/starlette hide the peer). handler_cancellation is on: a client that
goes away cancels its handler, and the handler cancels the generation (within one token).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import io
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gputui.api.chat import CONTEXT_NOTED, DISCUSS_IMAGE, ChatEvent, ChatRequest, image_context
from gputui.api.client import ChatStream, Client, CommandRefused
from gputui.api.views import ModelState, ModelView
from gputui.core.image_limits import ImageError, check_header
from gputui.core.kinds import kind_named
from gputui.core.profiles import Profile
from gputui.hardware.base import GpuTelemetry
from gputui.http_api import openai_format as fmt
from gputui.http_api.guard import Connections
from gputui.http_api.metrics import Metrics
from gputui.http_api.openai_format import ApiError, Completion, StopStrings
from gputui.remote.wire import peer_uid

MAX_BODY_BYTES = 24 << 20  # a long conversation or a 16 MiB image fits; a runaway upload does not
DEFAULT_QUEUE_LIMIT = 16  # the settings' api_queue
LOADABLE_AGAIN = (ModelState.UNLOADED, ModelState.FAILED, ModelState.CRASHED)
GONE_DRAIN_S = 30.0  # how long a cancelled reply may take to say it ended (one token, normally)
BODY_TIMEOUT_S = 60.0  # a body that trickles in (the headers' deadline is guard.py's)
log = logging.getLogger("gputui.server.api")  # a child of the server's logger (remote/logs.py): its log file


def only_its_user(token: str | None) -> Any:
    """Answer only the user who owns the server: on the Unix socket, the kernel's word on the peer
    (SO_PEERCRED); over TCP (asked for with --api-listen), the bearer token from the user's 0600
    token file, compared in constant time."""

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None and sock.family == socket.AF_UNIX:
            if peer_uid(sock) != os.getuid():
                return error_response(ApiError(403, "this gputui server serves only the user who started it",
                                               code="forbidden", type_="permission_error"))
        else:
            given = request.headers.get("Authorization", "")
            if token is None or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return error_response(ApiError(401, "a bearer token is needed over TCP: the one in the file "
                                                    "`gputui api` names", code="invalid_api_key",
                                               type_="authentication_error"))
        return await answered(request, handler)

    return check


async def answered(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except ApiError as e:
        return error_response(e)
    except web.HTTPException as e:  # aiohttp's own (405, 413, ...): in OpenAI's shape too
        return error_response(ApiError(e.status, e.reason, code=str(e.status)))


def error_response(e: ApiError) -> web.Response:
    return web.json_response(e.body(), status=e.status, headers=e.headers)


class ApiHandlers:
    def __init__(self, client: Client, metrics: Metrics, images: ImageFiles, queue_limit: int,
                 loadable: Profile | None = None) -> None:
        self.client = client
        # the settings' api_load: models a request may load by name, through the fixed order
        self.loadable = {m.name: m for m in loadable.models} if loadable is not None else {}
        self.metrics = metrics
        self.images = images
        # a model answers up to its slots at once and the rest wait their turn: past this many
        # under way for one model (plus its extra slots), a request is told to come back (429)
        # instead of waiting without end
        self.queue_limit = queue_limit
        self.under_way: dict[str, int] = {}
        metrics.queue_depth = lambda: dict(self.under_way)

    async def prometheus(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(self.metrics.text)  # reads the GPUs: NVML can block
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def models(self, request: web.Request) -> web.Response:
        ready = [(v.name, v.ready_since) for v in self.client.models() if v.ready]
        named = {name for name, _ in ready}
        ready += [(name, None) for name in self.loadable if name not in named]  # loaded when asked for
        return web.json_response(fmt.models_body(ready))

    async def _loaded(self, name: str) -> ModelView | None:
        """The model's view; a model api_load's profile defines is loaded first (the fixed order,
        its preflight first) when it is not there or not up - a refusal is the preflight's line."""
        view = self.client.model(name)
        entry = self.loadable.get(name)
        if entry is None or (view is not None and view.state not in LOADABLE_AGAIN):
            return view
        log.info("api: %s: loading it for a request (api_load)", name)
        try:
            view = await self.client.load(entry)
        except CommandRefused as e:
            raise ApiError(503, f"{name} could not be loaded: {e}", code="model_not_loaded") from None
        if not view.ready:
            raise ApiError(503, f"{name} could not be loaded: {view.error}", code="model_not_loaded")
        return view

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await asyncio.wait_for(request.json(loads=json.loads), BODY_TIMEOUT_S)
        except ValueError:
            raise fmt.bad("body", "the request body is not valid JSON") from None
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {BODY_TIMEOUT_S:.0f} s", param="body",
                           code="timeout") from None
        c = fmt.parse_request(body)  # the whole request checked before anything is loaded for it
        await self.images.check(c.image)
        view = await self._loaded(c.model)
        if view is None:
            held = ", ".join([*(v.name for v in self.client.models() if v.ready), *self.loadable]) or "none"
            raise ApiError(404, f"no model {c.model!r} in your gputui server (ready: {held})", param="model",
                           code="model_not_found")
        why = view.not_ready_reason()
        if why:
            raise ApiError(503, f"{c.model} cannot answer now: {why}", code="model_not_ready", headers={"Retry-After": "5"})
        async with self.images.held(c.image) as image:
            chat = await self._with_image(c, view.kind, image)
            return await self._answer(request, c, chat)

    async def _with_image(self, c: Completion, kind: str, image: str | None) -> ChatRequest:
        """The chat to send: as asked; or, for a model that reads images, the image and the last
        message as its question; or, for a conversation model given an image, the conversation
        with a ready describer's (BLIP2's) description of it as context: describe-then-discuss."""
        caps = kind_named(kind)
        last = c.chat.messages[-1]["content"]
        if caps.takes_images:
            if image is None:
                raise fmt.bad("messages", f"{c.model} answers questions about an image: send one as an image_url part")
            return ChatRequest(image=image, question=last, params=c.chat.params)
        if image is None:
            return c.chat
        describer = next((v for v in self.client.models() if v.ready and kind_named(v.kind).describes_images), None)
        if describer is None:
            raise fmt.bad("messages", f"{c.model} reads no images, and no model that describes them (BLIP2) is ready "
                                      "to do it first: load one (a profile with a blip2, or send the image to it)")
        caption, error = "", None
        async for ev in self.client.chat(describer.name, ChatRequest(image=image, question="")):
            caption += ev.text if ev.event == "text" else ""
            error = ev.text if ev.event == "error" else error
        if error is not None:
            raise ApiError(502, f"{describer.name} could not describe the image: {error}", code="describer_failed")
        context = [{"role": "user", "content": image_context("sent with the request", describer.name, caption)},
                   {"role": "assistant", "content": CONTEXT_NOTED}]
        question = {"role": "user", "content": last or DISCUSS_IMAGE}
        return ChatRequest((*c.chat.messages[:-1], *context, question), params=c.chat.params)

    async def _answer(self, request: web.Request, c: Completion, chat: ChatRequest) -> web.StreamResponse:
        under_way = self.under_way.get(c.model, 0)
        # api_queue: requests under way per model; one that batches answers `slots` at once, and
        # its extra slots add to the limit
        slots = next((v.slots for v in self.client.models() if v.name == c.model), 1)
        limit = self.queue_limit + slots - 1
        if under_way >= limit:
            self.metrics.requests.labels(c.model, "queue_full").inc()
            raise ApiError(429, f"{c.model} has {under_way} requests under way (the limit: api_queue in the settings"
                                f"{f', plus its {slots - 1} more slots' if slots > 1 else ''}); try again shortly",
                           code="queue_full", type_="rate_limit_error", headers={"Retry-After": "2"})
        self.under_way[c.model] = under_way + 1
        try:
            return await self._answer_now(request, c, chat)
        finally:
            self.under_way[c.model] -= 1
            if not self.under_way[c.model]:
                del self.under_way[c.model]

    async def _answer_now(self, request: web.Request, c: Completion, chat: ChatRequest) -> web.StreamResponse:
        reply = Reply(self.client.chat(c.model, dataclasses.replace(chat, asker="api")))
        status = "error"
        try:
            response = await (self._stream(request, c, reply) if c.stream else self._whole(c, reply))
            status = "ok" if reply.last is not None and reply.last.event == "done" else "error"
            return response
        except (asyncio.CancelledError, ConnectionResetError):  # the client went away: stop the reply
            # within one token (vLLM's disconnect middleware is the model), and say how it ended
            status = "client_gone"
            await asyncio.shield(reply.stop_for_a_client_gone(c.model))
            raise
        finally:
            last = reply.last
            self.metrics.reply_done(c.model, status, dict(last.stats) if last is not None else {})

    async def _whole(self, c: Completion, reply: Reply) -> web.Response:
        stops, text, stats = StopStrings(c.stops), "", {}
        async for ev in reply.events():
            if ev.event == "text":
                text += stops.feed(ev.text)
                if stops.hit:
                    await reply.stream.cancel()
            elif ev.event == "done":
                stats = dict(ev.stats)
            elif ev.event == "error":
                raise ApiError(500, ev.text, code="generation_failed")
        text += stops.flush()
        return web.json_response(fmt.completion_body(c, text, stats, stops.hit))

    async def _stream(self, request: web.Request, c: Completion, reply: Reply) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)

        async def send(obj: Any) -> None:
            await response.write(b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n")

        stops = StopStrings(c.stops)
        await send(fmt.chunk(c, {"role": "assistant", "content": ""}))
        async for ev in reply.events():
            piece = _piece(ev, stops)
            if piece:
                await send(fmt.chunk(c, {"content": piece}))
            if ev.event == "text" and stops.hit:
                await reply.stream.cancel()
            elif ev.event == "done":
                tail = stops.flush()
                if tail:
                    await send(fmt.chunk(c, {"content": tail}))
                await send(fmt.chunk(c, {}, fmt.finish_reason(ev.stats, stops.hit)))
                if c.include_usage:
                    await send(fmt.chunk(c, {}, usage_=fmt.usage(ev.stats), choices=False))
            elif ev.event == "error":
                await send(ApiError(500, ev.text, code="generation_failed").body())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class ImageFiles:
    """Where a request's image is while its reply is made: a data: URL's bytes in a file of the
    user's own (0600, in the private runtime folder; the worker opens images by path), gone when
    the reply ends; a file:// path as it is, once it is known to be a file this user can read."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @staticmethod
    async def check(image: fmt.Image | None) -> None:
        """A bad image (not a file of yours, not an image, a decompression bomb) is the request's
        fault: a 400 before any model is loaded or asked (the header is read in a thread: a path
        may sit on a slow filesystem)."""
        if image is None:
            return
        if image.path is not None and not (os.path.isfile(image.path) and os.access(image.path, os.R_OK)):
            raise fmt.bad("messages", f"{image.path}: not a file you can read")
        source = image.path if image.path is not None else io.BytesIO(image.data or b"")
        try:
            await asyncio.to_thread(check_header, source, image.path or "the image")
        except ImageError as e:
            raise fmt.bad("messages", str(e)) from None

    @contextlib.asynccontextmanager
    async def held(self, image: fmt.Image | None) -> AsyncIterator[str | None]:
        if image is None:
            yield None
            return
        if image.path is not None:
            yield image.path
            return
        self.folder.mkdir(mode=0o700, exist_ok=True)
        path = self.folder / f"{uuid.uuid4().hex}.img"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(image.data or b"")
            yield str(path)
        finally:
            path.unlink(missing_ok=True)


class Reply:
    """One reply's events, read from the chat stream by a task of its own: a client that goes away
    cancels the request handler, and that must not close the stream under the reply (its cancel
    would then reach no request, and the worker would write the reply out for no one)."""

    _running: set[asyncio.Task[None]] = set()  # referenced until done, as asyncio asks

    def __init__(self, stream: ChatStream) -> None:
        self.stream = stream
        self.last: ChatEvent | None = None
        self._queue: asyncio.Queue[ChatEvent | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump(), name="gputui-api-reply")
        Reply._running.add(self._task)
        self._task.add_done_callback(Reply._running.discard)

    async def _pump(self) -> None:
        try:
            async for ev in self.stream:
                self.last = ev
                self._queue.put_nowait(ev)
        finally:
            self._queue.put_nowait(None)

    async def events(self) -> AsyncIterator[ChatEvent]:
        while (ev := await self._queue.get()) is not None:
            yield ev

    async def stop_for_a_client_gone(self, model: str) -> None:
        await self.stream.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), GONE_DRAIN_S)
        except asyncio.TimeoutError:
            pass
        stats = dict(self.last.stats) if self.last is not None and self.last.ends else {}
        log.info("api: %s: the client went away; the reply stopped after %s tokens (%s)", model,
                 stats.get("new_tokens", "?"), stats.get("finish", "no end seen"))


def _piece(ev: ChatEvent, stops: StopStrings) -> str:
    return stops.feed(ev.text) if ev.event == "text" and not stops.hit else ""


def make_app(client: Client, metrics: Metrics, images: ImageFiles, token: str | None = None,
             queue_limit: int = DEFAULT_QUEUE_LIMIT, loadable: Profile | None = None) -> web.Application:
    app = web.Application(middlewares=[only_its_user(token)], client_max_size=MAX_BODY_BYTES)
    h = ApiHandlers(client, metrics, images, queue_limit, loadable)
    app.router.add_get("/v1/models", h.models)
    app.router.add_post("/v1/chat/completions", h.chat_completions)
    app.router.add_get("/metrics", h.prometheus)
    return app


class ApiServer:
    """The API's listener on `path` (bound 0600 from the start), and on `tcp` (host, port) with
    the bearer `token` when asked."""

    def __init__(self, client: Client, path: Path, telemetry: GpuTelemetry | None = None,
                 tcp: tuple[str, int] | None = None, token: str | None = None,
                 queue_limit: int = DEFAULT_QUEUE_LIMIT, loadable: Profile | None = None) -> None:
        self.client, self.path, self.tcp, self.token = client, path, tcp, token
        self.queue_limit, self.loadable = queue_limit, loadable
        self.tcp_bound: str | None = None  # host:port once listening (a port of 0 is chosen then)
        self.metrics = Metrics(telemetry.snapshot if telemetry is not None else lambda: None, client)
        self._runner: web.AppRunner | None = None
        self._follower: asyncio.Task[None] | None = None
        self.connections = Connections()
        self._listeners: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.path.unlink(missing_ok=True)  # we hold the server's lock: a socket here is a stale one
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        images = ImageFiles(self.path.parent / "api-images")
        self._runner = web.AppRunner(make_app(self.client, self.metrics, images, self.token, self.queue_limit,
                                              self.loadable),
                                     handler_cancellation=True, access_log=None)
        await self._runner.setup()
        loop = asyncio.get_running_loop()
        # aiohttp's protocol behind our guard (guard.py: a connection limit, a deadline for headers)
        protocol = self.connections.factory(self._runner.server)  # type: ignore[arg-type]
        self._listeners.append(await loop.create_unix_server(protocol, sock=sock))
        if self.tcp is not None:  # bound here, as the Unix socket is: its port is known (0 asks for any)
            tcp = socket.create_server(self.tcp, family=socket.AF_INET6 if ":" in self.tcp[0] else socket.AF_INET)
            host, port = tcp.getsockname()[:2]
            self.tcp_bound = f"{_host(host)}:{port}"
            self._listeners.append(await loop.create_server(protocol, sock=tcp))
        self._follower = asyncio.create_task(self._follow(), name="gputui-api-metrics")

    async def _follow(self) -> None:
        async for ev in self.client.events(self.client.last_seq):
            self.metrics.saw(ev)

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
        for listener in self._listeners:
            listener.close()  # no new connections; the runner's cleanup ends the open ones
        if self._runner is not None:
            await self._runner.cleanup()
        self.path.unlink(missing_ok=True)
