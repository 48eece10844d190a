"""The interface every user of the scheduler goes through (see gputui.api)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol, runtime_checkable

from gputui.api.chat import ChatEvent, ChatRequest
from gputui.api.views import Event, ModelView, PlanLine, ProfileStep, UnloadResult
from gputui.core.profiles import Profile
from gputui.core.requests import ModelRequest


class CommandRefused(Exception):
    """A command that cannot be done as asked (no such model, not ready, does not fit); str()
    is one line for the user. Every other failure of a command is in its result (a model view
    with state failed and the reason)."""

    def to_json(self) -> dict[str, Any]:
        return {"error": "refused", "message": str(self)}


class ChatStream(Protocol):
    """One chat request's events: text and notices, then one done or error (api/chat.py)."""

    def __aiter__(self) -> AsyncIterator[ChatEvent]: ...

    async def cancel(self) -> None:
        """Ask the worker to stop (within one token); the stream then ends with done."""


class Client(Protocol):
    @property
    def device(self) -> str:
        """What the workers compute on: "cuda", or "cpu" (the simulated server)."""
        ...

    # -- reading: immutable snapshots, safe from any thread --------------------------------
    def models(self) -> list[ModelView]: ...
    def model(self, name: str) -> ModelView | None: ...
    def worker_pids(self) -> Mapping[int, str]: ...

    @property
    def last_seq(self) -> int:
        """The number of the newest event this client knows of (a server sends it with each
        answer; a remote client's copy of the models is current up to it)."""
        ...

    def events(self, since: int = 0) -> AsyncIterator[Event]:
        """Every event after `since`, then live ones, in order, for as long as it is followed."""
        ...

    # -- commands: serialised in arrival order by the scheduler's queue ---------------------
    async def load(self, request: ModelRequest) -> ModelView: ...
    async def unload(self, name: str) -> UnloadResult: ...
    async def move(self, name: str, gpu: str) -> ModelView: ...
    async def reload(self, name: str) -> ModelView: ...
    async def plan_profile(self, profile: Profile) -> list[PlanLine]: ...
    async def apply_profile(self, profile: Profile) -> list[ProfileStep]: ...
    async def current_profile(self, name: str) -> Profile: ...

    def chat(self, name: str, request: ChatRequest) -> ChatStream: ...

    async def start(self) -> None: ...
    async def close(self) -> None: ...


@runtime_checkable
class ServerClient(Client, Protocol):
    """A client of the user's server (not the embedded scheduler): it can also end that server."""

    async def shutdown(self) -> None: ...
