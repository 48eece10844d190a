"""The client seam over an in-process Scheduler: what the dashboard, `gputui chat` and
`gputui run` use today, and what a server will put behind its socket.

It only translates: a command goes to the scheduler's queue and comes back as a typed result
(a ModelView, an UnloadResult, profile steps); a refusal is a CommandRefused with one line;
reads are the scheduler's immutable snapshots; events are its numbered stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from gputui.api.chat import ChatEvent, ChatRequest, stats_of
from gputui.api.client import CommandRefused
from gputui.api.views import Event, ModelView, PlanLine, ProfileStep, UnloadResult
from gputui.core.checkpoint_info import CheckpointError
from gputui.core.placement import PlacementRefused
from gputui.core.profiles import Profile
from gputui.core.requests import ModelRequest
from gputui.journal import ConversationLog, Journals
from gputui.scheduler import memory_checks, profiles_runner
from gputui.scheduler.scheduler import Scheduler
from gputui.scheduler.worker_handle import WorkerFailed


class LocalChatStream:
    """One request's events, journaled here when the request names a conversation: its new
    messages are on disk before the request goes to the worker, the reply as it comes (at least
    every second), and its end - fsynced before the last event (done, error) goes out, so a
    reply the caller saw finish is on disk. The journal is complete even if the caller stops
    listening. Saving that stops or resumes is said on the stream and in the event log. The
    worker protocol's dicts end here: what goes out are ChatEvents."""

    def __init__(self, scheduler: Scheduler, journals: Journals, name: str, request: ChatRequest) -> None:
        self._scheduler, self._journals, self._name, self._request = scheduler, journals, name, request
        self._rid: str | None = None

    def __aiter__(self) -> AsyncIterator[ChatEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[ChatEvent]:
        log = await self._open_journal()
        reply = log.begin_reply() if log is not None else 0
        ended, t0 = False, time.monotonic()

        async def end(complete: bool, **info: Any) -> None:
            nonlocal ended
            ended = True
            if log is not None:
                await log.end_reply(reply, complete, seconds=round(time.monotonic() - t0, 3), **info)

        try:
            if notice := self._notice(log):  # saving stopped while the request's messages were written
                yield ChatEvent("notice", notice)
            async for ev in self._scheduler.chat(self._name, self._request.for_worker(), on_request_id=self._set_rid,
                                                 asker=self._request.asker or "local"):
                notice = self._notice(log)
                if notice:
                    yield ChatEvent("notice", notice)
                out = self._translate(ev)
                if out is None:
                    continue
                if out.event == "text" and log is not None:
                    await log.reply_text(reply, out.text)
                elif out.event == "done":
                    await end(out.stats.get("finish") != "cancelled", stats=dict(out.stats))
                elif out.event == "error":
                    await end(False, error=out.text if ev.get("event") != "exit" else
                              f"worker exited (code {ev.get('returncode')})")
                if out.ends and (notice := self._notice(log)):
                    yield ChatEvent("notice", notice)
                yield out
        except CommandRefused as e:  # not ready: an answer like any other error
            await end(False, error=str(e))
            yield ChatEvent("error", str(e))
        finally:
            self._rid = None
            if not ended:  # the caller stopped listening, or the stream broke: the end is still written
                await end(False, error="the reply was cut off")

    def _translate(self, ev: dict[str, Any]) -> ChatEvent | None:
        """A worker's message as a ChatEvent (None: nothing for the caller)."""
        kind = ev.get("event")
        if kind == "token":
            text = str(ev.get("text", ""))
            return ChatEvent("text", text) if text else None
        if kind == "done":
            return ChatEvent("done", stats=stats_of(ev))
        if kind == "error":
            return ChatEvent("error", str(ev.get("message")))
        if kind == "exit":
            return ChatEvent("error", f"the {self._name} worker died mid-reply (code {ev.get('returncode')}); "
                                      "the partial reply is saved; reload the model to go on")
        return None

    def _notice(self, log: ConversationLog | None) -> str | None:
        """A change in saving (stopped, resumed), said once on this stream and to every client
        through the event log."""
        notice = log.take_notice() if log is not None else None
        if notice and log is not None:
            self._scheduler.timeline.record("journal", self._name, conversation=log.path.name, message=notice)
        return notice

    async def _open_journal(self) -> ConversationLog | None:
        j = self._request.journal
        if j is None:
            return None
        try:
            log = await self._journals.get(j.id, dict(j.meta))
        except ValueError:  # not an id (a path, a traversal): no journal, never a file elsewhere
            return None
        for message in j.append:
            image = message.get("image")
            await log.user_message(str(message.get("content", "")), role=str(message.get("role", "user")),
                                   image=str(image) if image else None)
        return log

    def _set_rid(self, rid: str) -> None:
        self._rid = rid

    async def cancel(self) -> None:
        if self._rid is not None:
            await self._scheduler.cancel(self._name, self._rid)


class LocalClient:
    def __init__(self, scheduler: Scheduler, warm: Iterable[str] = ()) -> None:
        """`warm`: model kinds to start a spare worker for at start (the ones about to load)."""
        self.scheduler = scheduler
        self._warm = tuple(warm)
        self.journals = Journals()

    @property
    def device(self) -> str:
        return self.scheduler.launcher.device

    # -- reading ------------------------------------------------------------------------

    def models(self) -> list[ModelView]:
        return self.scheduler.views()

    def model(self, name: str) -> ModelView | None:
        return self.scheduler.view(name)

    def worker_pids(self) -> Mapping[int, str]:
        return self.scheduler.worker_pids()

    def events(self, since: int = 0) -> AsyncIterator[Event]:
        return self.scheduler.events.follow(since)

    @property
    def last_seq(self) -> int:
        """The number of the newest event (a server sends it with each answer)."""
        return self.scheduler.events.last_seq

    # -- commands -----------------------------------------------------------------------

    async def load(self, request: ModelRequest) -> ModelView:
        try:
            resolved = await asyncio.to_thread(profiles_runner.request_for, request)  # demo:NAME
            rec = await self.scheduler.load(resolved)
        except (CheckpointError, PlacementRefused, ValueError) as e:
            raise CommandRefused(str(e)) from None
        return rec.view()

    async def unload(self, name: str) -> UnloadResult:
        if self.scheduler.view(name) is None:
            raise CommandRefused(f"no model named {name!r}")
        r = await self.scheduler.unload(name)
        return UnloadResult(name, bool(r.get("returned")), r.get("returned_bytes"), r.get("expected_bytes"),
                            r.get("seconds"), r.get("returncode"))

    async def move(self, name: str, gpu: str) -> ModelView:
        try:
            rec = await self.scheduler.move(name, gpu)
        except (PlacementRefused, CheckpointError) as e:
            raise CommandRefused(str(e)) from None
        except WorkerFailed as e:  # the target failed; the model still serves where it was
            raise CommandRefused(f"move of {name} failed, it stays where it was: {e}") from None
        return rec.view()

    async def reload(self, name: str) -> ModelView:
        """A fresh worker for the model: a ready one is unloaded first (its pid changes: a
        restart that kept the old worker was no restart), then loaded in the fixed order."""
        view = self.scheduler.view(name)
        if view is None:
            raise CommandRefused(f"no model named {name!r}")
        if view.state.value in ("ready", "loading", "queued"):
            await self.scheduler.unload(name)
        return await self.load(view.request)

    async def plan_profile(self, profile: Profile) -> list[PlanLine]:
        snap = await memory_checks.snapshot(self.scheduler.telemetry)
        return await profiles_runner.plan_profile(profile, snap, self.scheduler.policy, self.scheduler.launcher,
                                                  set(self.worker_pids()))

    async def apply_profile(self, profile: Profile) -> list[ProfileStep]:
        return await profiles_runner.apply_profile(profile, self.scheduler)

    async def current_profile(self, name: str) -> Profile:
        demo = profiles_runner.demo_paths_if_built()
        try:
            return profiles_runner.current_profile(self.models(), name, demo)
        except ValueError as e:
            raise CommandRefused(str(e)) from None

    def chat(self, name: str, request: ChatRequest) -> LocalChatStream:
        return LocalChatStream(self.scheduler, self.journals, name, request)

    async def start(self) -> None:
        self.scheduler.start()
        self.scheduler.launcher.warm_spares(self._warm)

    async def close(self) -> None:
        await self.scheduler.close()
