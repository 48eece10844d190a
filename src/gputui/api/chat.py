"""A chat request and its events, typed, as every client speaks them (the dashboard, `gputui chat`,
the server's wire, and the HTTP API next). The worker protocol's dicts stop at the local stream
(scheduler/client.py), which turns them into ChatEvents; the wire carries these as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal["text", "notice", "done", "error"]
EVENT_KINDS: frozenset[str] = frozenset({"text", "notice", "done", "error"})
# what a done event carries (dropped_messages: the oldest turns left out to fit the context)
STATS = ("new_tokens", "ttft_s", "tokens_per_s", "finish", "prompt_tokens", "dropped_messages")


class BadChatRequest(ValueError):
    """One line naming the field that cannot be used."""


@dataclass(frozen=True)
class Journal:
    """Where the side that runs the model journals the request: conversation `id`, the new
    messages to write before the request goes to the worker (`append`), and the conversation's
    `meta` (model, kind, params, system prompt) for a new journal."""

    id: str
    append: tuple[Mapping[str, Any], ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "append": [dict(m) for m in self.append], "meta": dict(self.meta)}


@dataclass(frozen=True)
class ChatRequest:
    """A conversation (`messages`, for a chat model) or an image and a question about it (for a
    model that reads images), with generation `params` and, optionally, its `journal`."""

    messages: tuple[Mapping[str, Any], ...] = ()
    image: str | None = None
    question: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    journal: Journal | None = None
    # who asks (the server sets it from the connection, never from the request: "api", a
    # control connection; "" for this process's own dashboard or chat): turns are fair between them
    asker: str = field(default="", compare=False)

    def for_worker(self) -> dict[str, Any]:
        """The worker protocol's request (the scheduler puts the model's defaults under params)."""
        out: dict[str, Any] = {"params": dict(self.params)}
        if self.image is not None or self.question is not None:
            out.update(image=self.image, question=self.question)
        else:
            out["messages"] = [dict(m) for m in self.messages]
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"messages": [dict(m) for m in self.messages], "params": dict(self.params)}
        if self.image is not None:
            out["image"] = self.image
        if self.question is not None:
            out["question"] = self.question
        if self.journal is not None:
            out["journal"] = self.journal.to_json()
        return out

    @classmethod
    def from_json(cls, data: Any) -> ChatRequest:
        """From the wire; BadChatRequest (one line naming the field) for what cannot be used."""
        if not isinstance(data, dict):
            raise BadChatRequest("request must be an object")
        messages = data.get("messages", [])
        if not (isinstance(messages, list) and all(
                isinstance(m, dict) and isinstance(m.get("content", ""), str) for m in messages)):
            raise BadChatRequest("messages must be a list of {role, content} objects")
        params = data.get("params", {})
        if not isinstance(params, dict):
            raise BadChatRequest("params must be an object")
        for key in ("image", "question"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise BadChatRequest(f"{key} must be text")
        journal = data.get("journal")
        if journal is not None:
            if not (isinstance(journal, dict) and isinstance(journal.get("id"), str)):
                raise BadChatRequest("journal must be an object with an id")
            append, meta = journal.get("append") or [], journal.get("meta") or {}
            if not (isinstance(append, list) and all(isinstance(m, dict) for m in append) and isinstance(meta, dict)):
                raise BadChatRequest("journal.append must be a list of objects and journal.meta an object")
            journal = Journal(journal["id"], tuple(append), meta)
        return cls(tuple(messages), data.get("image"), data.get("question"), params, journal)


@dataclass(frozen=True)
class ChatEvent:
    """One piece of a reply: `text`; a `notice` for the person (saving stopped, a reload); the
    `done` that ends it, with its `stats`; or the `error` that ends it instead."""

    event: EventKind
    text: str = ""
    stats: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ends(self) -> bool:
        return self.event in ("done", "error")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.event, "text": self.text}
        if self.stats:
            out["stats"] = dict(self.stats)
        return out

    @classmethod
    def from_json(cls, data: Any) -> ChatEvent:
        if not isinstance(data, dict) or data.get("event") not in EVENT_KINDS:
            return cls("error", f"the server sent a chat event this gputui cannot read: {str(data)[:80]}")
        stats = data.get("stats")
        return cls(data["event"], str(data.get("text", "")), dict(stats) if isinstance(stats, dict) else {})


# describe-then-discuss, one wording for every front end (the chat pane, `gputui chat`, the API):
# a model that reads images describes one, and the description joins a conversation as context
DISCUSS_IMAGE = "Describe and discuss this image."  # the question when none is given
CONTEXT_NOTED = "Noted."  # the conversation model's turn after the context


def image_context(image: str, describer: str, caption: str) -> str:
    return f"An image ({image}) was described by {describer}: {caption.strip() or '(no description)'}"


def stats_of(worker_done: Mapping[str, Any]) -> dict[str, Any]:
    """A done event's stats from the worker's done message."""
    return {k: worker_done.get(k) for k in STATS}
