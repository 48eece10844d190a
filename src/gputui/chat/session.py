"""One conversation with one model, shared by the TUI and `gputui chat`.

It keeps the history, writes the journal before anything is sent, streams the reply, and turns
every way a reply can end (done, stopped, error, worker gone) into a ChatEvent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from gputui.api.chat import CONTEXT_NOTED, ChatEvent, ChatRequest, Journal, image_context
from gputui.api.client import ChatStream, Client, CommandRefused
from gputui.api.views import ModelState
from gputui.chat.sanitize import InputRefused, clean_prompt
from gputui.core.kinds import kind_named
from gputui.journal import Transcript, conversation_path, new_conversation_id

__all__ = ["ChatEvent", "ChatSession", "stats_line"]


def ready_describer(client: Client) -> ChatSession | None:
    """The one rule every front end (the chat pane, `gputui chat`; the API keeps the same) uses to
    pick who describes an image for a conversation: a ready model whose kind describes images
    (BLIP2 today). Its side questions are not journaled: the description is, as the
    conversation's context."""
    for v in client.models():
        if v.ready and kind_named(v.kind).describes_images:
            return ChatSession(client, v.name, v.kind, journaled=False)
    return None


def stats_line(stats: Mapping[str, Any]) -> str:
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
    """One conversation: the history (sent whole with each request), the stop, and the journal's
    id. The journal itself is written by the side that runs the model (the client's `chat`
    does it from the request's "journal" field), so it is complete even if this process dies
    mid-reply; `journaled=False` keeps a conversation off disk (a describer's side questions)."""

    def __init__(self, client: Client, model: str, kind: str, system_prompt: str | None = None,
                 params: dict[str, Any] | None = None, conversation_id: str | None = None,
                 journaled: bool = True) -> None:
        self.client = client
        self.model = model
        self.kind = kind
        self.caps = kind_named(kind)  # what a chat with this kind is: images or a conversation
        self.conversation_id = (conversation_id or new_conversation_id(model)) if journaled else None
        self.params: dict[str, Any] = dict(params or {})
        self.system_prompt = system_prompt
        self.messages: list[dict[str, Any]] = []
        if system_prompt:
            self.messages.append({"role": "system", "content": system_prompt})
        self._unsaved: list[dict[str, Any]] = []  # context to journal with the next request
        self._live: ChatStream | None = None  # the reply being streamed, to stop it

    @classmethod
    def resume(cls, client: Client, kind: str, transcript: Transcript) -> ChatSession:
        """Go on with a past conversation (its journal read back), under the same id."""
        meta = transcript.meta
        session = cls(client, str(meta.get("model")), kind, meta.get("system_prompt"), dict(meta.get("params") or {}),
                      conversation_id=transcript.path.stem)
        for m in transcript.messages:
            if m.content:  # an incomplete reply is kept as far as it got
                session.messages.append({"role": "user" if m.role == "context" else m.role, "content": m.content})
        return session

    @property
    def journal_path(self) -> Path | None:
        return conversation_path(self.conversation_id) if self.conversation_id else None

    async def stop(self) -> None:
        """Stop the reply in progress (the worker stops within one token)."""
        if self._live is not None:
            await self._live.cancel()

    def clear(self) -> None:
        self.messages = [m for m in self.messages if m["role"] == "system"]

    def set_system(self, text: str) -> None:
        """/system: the new system prompt, for the next message and in the journal's meta."""
        self.system_prompt = text
        self.messages = [{"role": "system", "content": text}, *(m for m in self.messages if m["role"] != "system")]

    async def describe(self, describer: ChatSession, image: str, question: str) -> AsyncIterator[ChatEvent]:
        """/describe: the describing model (BLIP2) answers about the image, and its answer joins
        this conversation as context. Yields a notice (the caption), or an error."""
        caption = ""
        async for ev in describer.send(question or "", image=image):
            if ev.event == "text":
                caption += ev.text
            elif ev.event == "error":
                yield ChatEvent("error", f"{describer.model}: {ev.text}")
                return
        caption = caption.strip() or "(no description)"
        await self.add_context(image_context(image, describer.model, caption))
        yield ChatEvent("notice", f"{describer.model} says: {caption}")

    async def send(self, text: str, image: str | None = None) -> AsyncIterator[ChatEvent]:
        """Send one user message; yields the reply as events. Empty input yields nothing."""
        if not text.strip() and not image:
            return
        try:
            content = clean_prompt(text)
        except InputRefused as e:
            yield ChatEvent("error", str(e))
            return
        if self.caps.takes_images and image is None:  # refused here: the worker could only refuse it too
            yield ChatEvent("error", f"{self.model} needs an image: /image PATH [question]")
            return
        view = self.client.model(self.model)
        if view is not None and view.state is ModelState.UNLOADED:
            # unloaded meanwhile (its keep-alive ran out): asked again, it comes back through the
            # fixed order, as the user sees; both front ends (TUI and line chat) go through here
            yield ChatEvent("notice", f"{self.model} was unloaded; loading it again ...")
            try:
                view = await self.client.load(view.request)
            except CommandRefused as e:
                yield ChatEvent("error", f"{self.model} did not load again: {e}")
                return
        why = f"no model named {self.model!r} is loaded" if view is None else view.not_ready_reason()
        if why:
            yield ChatEvent("error", why)
            return
        user: dict[str, Any] = {"role": "user", "content": content}
        self.messages.append({"role": "user", "content": content})
        if self.caps.takes_images and image:
            user["image"] = image
        journal = Journal(self.conversation_id, (*self._unsaved, user),
                          {"model": self.model, "kind": self.kind, "params": self.params,
                           "system_prompt": self.system_prompt}) if self.conversation_id is not None else None
        request = ChatRequest(params=dict(self.params), journal=journal, **(
            {"image": image, "question": content} if self.caps.takes_images else {"messages": tuple(self.messages)}))
        self._unsaved = []
        async for ev in self._stream(request):
            yield ev

    async def add_context(self, content: str) -> None:
        """Text from elsewhere (a BLIP2 description) that the model should know about; journaled
        with the next message."""
        content = clean_prompt(content)
        self._unsaved.append({"role": "context", "content": content})
        self.messages.append({"role": "user", "content": content})
        self.messages.append({"role": "assistant", "content": CONTEXT_NOTED})

    async def _stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        text = ""
        self._live = stream = self.client.chat(self.model, request)
        try:
            async for ev in stream:
                if ev.event == "text":
                    text += ev.text
                yield ev
        finally:
            self._live = None
            if text:
                self.messages.append({"role": "assistant", "content": text})

