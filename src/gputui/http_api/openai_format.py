"""OpenAI's chat-completions format, both ways, with no HTTP in it: a request body becomes a model
name and a ChatRequest (or an ApiError naming the field), and ChatEvents become a completion or
its stream of chunks. What the fields mean follows OpenAI's API reference; what gputui cannot do
yet is refused by name rather than ignored (`n` above 1, `logprobs`, tools).
"""

from __future__ import annotations

import base64
import binascii
import time
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gputui.api.chat import ChatRequest
from gputui.core import generation

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOPS = 4  # as OpenAI allows
MAX_IMAGE_BYTES = 16 << 20
REFUSED_FIELDS = {  # asked for, and not done: said, never silently ignored
    "logprobs": "logprobs are not available", "top_logprobs": "logprobs are not available",
    "tools": "tool calls are not available", "functions": "function calls are not available",
    "response_format": "response_format is not available (only text)",
}


class ApiError(Exception):
    """An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with `status`."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type_: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code
        self.type = type_ or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}


def bad(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


@dataclass(frozen=True)
class Image:
    """An image a message carries: its bytes (a data: URL) or a path of this user's (file://).
    Nothing is ever downloaded."""

    data: bytes | None = None
    path: str | None = None


@dataclass(frozen=True)
class Completion:
    """What one request asks for, beyond the chat itself. `image`: the last user message's, if
    it has one (the chat's messages then hold its text only)."""

    model: str
    chat: ChatRequest
    stream: bool = False
    include_usage: bool = False
    stops: tuple[str, ...] = ()
    image: Image | None = None
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))


def parse_request(body: Any) -> Completion:
    """A chat-completions body -> Completion; ApiError(400) naming the first field that is wrong."""
    if not isinstance(body, dict):
        raise bad("body", "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model", "model is required: the name of a model your gputui server holds (GET /v1/models)")
    for name, why in REFUSED_FIELDS.items():
        if body.get(name) not in (None, False, [], {"type": "text"}):
            raise bad(name, why)
    n = body.get("n", 1)
    if n != 1:
        raise bad("n", "only n = 1 is available (one choice per request)")
    messages, image = _messages(body.get("messages"))
    params = _params(body)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("stream", "stream must be true or false")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise bad("stream_options", "stream_options must be an object; include_usage true or false")
    stops = _stops(body.get("stop"))
    return Completion(model, ChatRequest(tuple(messages), params=params), stream,
                      bool(options.get("include_usage", False)), stops, image)


def _messages(raw: Any) -> tuple[list[dict[str, str]], Image | None]:
    if not isinstance(raw, list) or not raw:
        raise bad("messages", "messages must be a non-empty list of {role, content}")
    out, image = [], None
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(where, f"{where} must be an object with role and content")
        role = ROLES.get(m.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise bad(f"{where}.role", f"{where}.role must be one of {', '.join(ROLES)}")
        text, images = _content(m.get("content"), f"{where}.content")
        if images and (i != len(raw) - 1 or len(images) > 1):
            raise bad(f"{where}.content", "one image, in the last user message, is what gputui answers about")
        image = images[0] if images else None
        out.append({"role": role, "content": text})
    if out[-1]["role"] != "user":
        raise bad("messages", "the last message must be the user's")
    return out, image


def _content(content: Any, where: str) -> tuple[str, list[Image]]:
    """A message's content: a string, or parts - text (joined by newlines) and images."""
    if isinstance(content, str):
        return content, []
    if content is None:
        return "", []
    if not isinstance(content, list):
        raise bad(where, f"{where} must be a string or a list of content parts")
    texts, images = [], []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            images.append(_image(part.get("image_url"), f"{where}[{j}].image_url"))
        else:
            raise bad(f"{where}[{j}]", f"{where}[{j}] must be a text part or an image_url part")
    return "\n".join(texts), images


def _image(ref: Any, where: str) -> Image:
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str):
        raise bad(where, f"{where}.url must be a data: URL or a file:// path")
    if url.startswith("data:"):
        head, sep, payload = url.partition(",")
        if not sep or not head.endswith(";base64"):
            raise bad(where, "a data: URL must be base64: data:image/png;base64,...")
        if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
            raise bad(where, f"the image is over {MAX_IMAGE_BYTES >> 20} MiB")
        try:
            return Image(data=base64.b64decode(payload, validate=True))
        except (binascii.Error, ValueError):
            raise bad(where, "the data: URL is not valid base64") from None
    if url.startswith("file://"):
        path = urllib.parse.unquote(url[len("file://"):])
        if not path.startswith("/"):
            raise bad(where, "a file:// URL needs an absolute path: file:///home/you/cat.png")
        return Image(path=path)
    raise bad(where, "images come as data: URLs or file:// paths of yours; gputui never downloads")


def _params(body: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        params["max_new_tokens"] = limit
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            params[key] = body[key]
    for key, value in params.items():
        why = generation.check(key, value)
        if why:
            name = key if key != "max_new_tokens" else ("max_completion_tokens" if "max_completion_tokens" in body
                                                         else "max_tokens")
            raise bad(name, why.replace("max_new_tokens", name))
    ignore_eos = body.get("ignore_eos", False)  # vLLM's extension (extra_body): generate to max_tokens
    if not isinstance(ignore_eos, bool):
        raise bad("ignore_eos", "ignore_eos must be true or false")
    if ignore_eos:
        params["ignore_stop"] = True
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < (1 << 63):
            raise bad("seed", "seed must be a whole number from 0 to 2^63-1")
        params["seed"] = seed
    return params


def _stops(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    stops = [raw] if isinstance(raw, str) else raw
    if not (isinstance(stops, list) and len(stops) <= MAX_STOPS and all(isinstance(s, str) and s for s in stops)):
        raise bad("stop", f"stop must be a string or a list of at most {MAX_STOPS} non-empty strings")
    return tuple(stops)


# -- the answer ---------------------------------------------------------------------------


def finish_reason(stats: Mapping[str, Any], stopped_by_string: bool) -> str:
    if stopped_by_string:
        return "stop"
    return "length" if stats.get("finish") == "length" else "stop"


def usage(stats: Mapping[str, Any]) -> dict[str, int]:
    prompt = int(stats.get("prompt_tokens") or 0)
    completion = int(stats.get("new_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(c: Completion, text: str, stats: Mapping[str, Any], stopped_by_string: bool) -> dict[str, Any]:
    return {"id": c.id, "object": "chat.completion", "created": c.created, "model": c.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason(stats, stopped_by_string), "logprobs": None}],
            "usage": usage(stats)}


def chunk(c: Completion, delta: Mapping[str, Any], finish: str | None = None,
          usage_: Mapping[str, int] | None = None, choices: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"id": c.id, "object": "chat.completion.chunk", "created": c.created, "model": c.model,
                           "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish, "logprobs": None}]
                           if choices else []}
    if c.include_usage:
        out["usage"] = dict(usage_) if usage_ is not None else None
    return out


def models_body(names: Sequence[tuple[str, float | None]]) -> dict[str, Any]:
    """GET /v1/models: (name, ready since) of each model the server holds ready."""
    return {"object": "list", "data": [{"id": name, "object": "model", "created": int(since or 0), "owned_by": "gputui"}
                                       for name, since in names]}


class StopStrings:
    """Stop strings over a stream of text pieces: text is passed on only once it cannot be the
    start of a stop string, and what comes from a stop string on is never sent (as OpenAI does).
    gputui's workers stop on token ids; strings are matched here, and the reply is then cancelled."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self._held = ""
        self.hit = False

    def feed(self, piece: str) -> str:
        """The text that can go out now."""
        if not self.stops:
            return piece
        if self.hit:  # tokens already on their way when the reply was cancelled
            return ""
        self._held += piece
        cut = min((i for i in (self._held.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.hit = True
            out, self._held = self._held[:cut], ""
            return out
        keep = max((k for s in self.stops for k in range(1, len(s)) if self._held.endswith(s[:k])), default=0)
        out, self._held = self._held[:len(self._held) - keep], self._held[len(self._held) - keep:]
        return out

    def flush(self) -> str:
        out, self._held = ("" if self.hit else self._held), ""
        return out
