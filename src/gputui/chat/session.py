"""One conversation with one model, shared by the TUI and `gputui chat`.

It keeps the history, writes the journal before anything is sent, streams the reply, and turns
every way a reply can end (done, stopped, error, worker gone) into a ChatEvent.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from gputui.api.client import ChatStream, Client
from gputui.chat.sanitize import InputRefused, clean_prompt
from gputui.chat.store import ConversationLog
from gputui.core.kinds import kind_named


@dataclass(frozen=True)
class ChatEvent:
    event: str  # "text" | "notice" | "done" | "error"
    text: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


def stats_line(stats: dict[str, Any]) -> str:
    ttft = stats.get("ttft_s")
    tps = stats.get("tokens_per_s")
    parts = [f"{stats.get('new_tokens', 0)} tokens"]
    if ttft is not None:
        parts.append(f"first token {ttft * 1000:.0f} ms")
    if tps:
        parts.append(f"{tps:.1f} tok/s")
    if stats.get("finish") == "cancelled":
        parts.append("stopped")
    return " · ".join(parts)


class ChatSession:
    def __init__(self, client: Client, model: str, kind: str, log: ConversationLog | None = None,
                 system_prompt: str | None = None, params: dict[str, Any] | None = None) -> None:
        self.client = client
        self.model = model
        self.kind = kind
        self.caps = kind_named(kind)  # what a chat with this kind is: images or a conversation
        self.log = log
        self.params: dict[str, Any] = dict(params or {})
        self.messages: list[dict[str, Any]] = []
        if system_prompt:
            self.messages.append({"role": "system", "content": system_prompt})
        self._live: ChatStream | None = None  # the reply being streamed, to stop it

    async def stop(self) -> None:
        """Stop the reply in progress (the worker stops within one token)."""
        if self._live is not None:
            await self._live.cancel()

    def clear(self) -> None:
        self.messages = [m for m in self.messages if m["role"] == "system"]

    async def send(self, text: str, image: str | None = None) -> AsyncIterator[ChatEvent]:
        """Send one user message; yields the reply as events. Empty input yields nothing."""
        if not text.strip() and not image:
            return
        try:
            content = clean_prompt(text)
        except InputRefused as e:
            yield ChatEvent("error", str(e))
            return
        if self.caps.takes_images and image is None:
            image, content = parse_image_command(content)
            if image is None:  # refused here: the worker could only refuse it too
                yield ChatEvent("error", f"{self.model} needs an image: /image PATH [question]")
                return
        view = self.client.model(self.model)
        why = f"no model named {self.model!r} is loaded" if view is None else view.not_ready_reason()
        if why:
            yield ChatEvent("error", why)
            return
        if self.log is not None:
            await self.log.user_message(content, image=image)
            failure = self.log.take_failure()
            if failure:
                yield ChatEvent("notice", failure)
        msg: dict[str, Any] = {"role": "user", "content": content}
        self.messages.append(msg)
        request: dict[str, Any] = {"params": self.params}
        if self.caps.takes_images:
            request.update(image=image, question=content)
        else:
            request["messages"] = list(self.messages)
        async for ev in self._stream(request):
            yield ev

    async def add_context(self, content: str) -> None:
        """Text from elsewhere (a BLIP2 description) that the model should know about."""
        content = clean_prompt(content)
        if self.log is not None:
            await self.log.user_message(content, role="context")
        self.messages.append({"role": "user", "content": content})
        self.messages.append({"role": "assistant", "content": "Noted."})

    async def _stream(self, request: dict[str, Any]) -> AsyncIterator[ChatEvent]:
        reply_no = self.log.begin_reply() if self.log is not None else 0
        text = ""
        complete = False
        info: dict[str, Any] = {}
        t0 = time.monotonic()
        self._live = stream = self.client.chat(self.model, request)
        try:
            async for e in stream:
                event = e["event"]
                if event == "token":
                    if e.get("notice"):
                        yield ChatEvent("notice", str(e["notice"]))
                    piece = str(e.get("text", ""))
                    if piece:
                        text += piece
                        if self.log is not None:
                            await self.log.reply_text(reply_no, piece)
                            failure = self.log.take_failure()
                            if failure:
                                yield ChatEvent("notice", failure)
                        yield ChatEvent("text", piece)
                elif event == "done":
                    complete = e.get("finish") != "cancelled"
                    info = {"stats": {k: e.get(k) for k in ("new_tokens", "ttft_s", "tokens_per_s", "finish", "prompt_tokens")}}
                    yield ChatEvent("done", stats=info["stats"])
                elif event == "error":
                    info = {"error": e.get("message")}
                    yield ChatEvent("error", str(e.get("message")))
                elif event == "exit":
                    info = {"error": f"worker exited (code {e.get('returncode')})"}
                    yield ChatEvent("error", f"the {self.model} worker died mid-reply (code {e.get('returncode')}); "
                                             "the partial reply is saved; reload the model to go on")
        finally:
            self._live = None
            if text:
                self.messages.append({"role": "assistant", "content": text})
            if self.log is not None:
                await self.log.end_reply(reply_no, complete, seconds=round(time.monotonic() - t0, 3), **info)


def parse_image_command(text: str) -> tuple[str | None, str]:
    """'/image PATH [question]' -> (PATH, question); other text -> (None, text)."""
    stripped = text.strip()
    if not stripped.startswith("/image"):
        return None, text
    try:
        parts = shlex.split(stripped)
    except ValueError:
        parts = stripped.split()
    if len(parts) < 2:
        return None, text
    return parts[1], " ".join(parts[2:])
