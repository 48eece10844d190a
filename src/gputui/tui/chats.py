"""Opening chats: one model's, a past conversation's from its journal, the next ready model's,
and a second pane beside the first. Each opening runs in a Textual worker (a session may wait on
the server), and a model that cannot answer is a toast saying why, never an empty chat."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from textual.app import App

from gputui.api.views import ModelView
from gputui.chat.session import ChatSession
from gputui.core.snapshot import ServerSnapshot
from gputui.journal import read_transcript
from gputui.tui.controller import ModelController
from gputui.tui.screens.chat import ChatScreen
from gputui.tui.widgets.chat_pane import ChatPane


class Chats:
    def __init__(self, app: App[None], controller: ModelController, simulated: bool,
                 snapshot: Callable[[], ServerSnapshot | None]) -> None:
        self.app, self.controller, self.simulated, self._snapshot = app, controller, simulated, snapshot

    def _run(self, work: Callable[[], Awaitable[None]], name: str) -> None:
        # a function, not a coroutine: an exclusive worker replaced before it starts never awaits it
        self.app.run_worker(work, group="chat-open", exit_on_error=False, name=name)

    def _ready_or_say(self, name: str) -> ModelView | None:
        client = self.controller.client
        view = client.model(name) if client is not None else None
        why = f"no model named {name!r} is loaded" if view is None else view.not_ready_reason()
        if why:
            self.app.notify(why, severity="error")
            return None
        return view

    def _pane(self, session: ChatSession) -> ChatPane:
        return ChatPane(session, describer=self.controller.describer_session)

    def open(self, name: str) -> None:
        self._run(partial(self._open, name), "open chat")

    async def _open(self, name: str) -> None:
        if not self.controller.usable() or self._ready_or_say(name) is None:
            return
        session = await self.controller.session(name)
        screen = ChatScreen([self._pane(session)], self.simulated)
        await self.app.push_screen(screen)
        snap = self._snapshot()
        if snap is not None:
            screen.show_snapshot(snap)

    def reopen(self, path: Path) -> None:
        self._run(partial(self._reopen, path), "reopen chat")

    async def _reopen(self, path: Path) -> None:
        """Continue a past conversation (from its journal) with its model, if that is ready."""
        transcript = await asyncio.to_thread(read_transcript, path)  # can be a big file
        model = str(transcript.meta.get("model"))
        if not self.controller.usable():
            return
        view = self._ready_or_say(model)
        if view is None or self.controller.client is None:
            return
        session = ChatSession.resume(self.controller.client, view.kind, transcript)
        self.controller.sessions[model] = session
        pane = self._pane(session)
        await self.app.push_screen(ChatScreen([pane], self.simulated))
        pane.show_history(transcript.messages)
        if transcript.skipped_lines:
            pane.note(f"{transcript.skipped_lines} unreadable line(s) in the journal were skipped")

    def switch(self, current: str) -> None:
        ready = self.controller.ready_models()
        if len(ready) < 2:
            self.app.notify("no other ready model to switch to", severity="warning")
            return
        nxt = ready[(ready.index(current) + 1) % len(ready)] if current in ready else ready[0]
        self.app.pop_screen()
        self.open(nxt)

    def split(self, screen: ChatScreen) -> None:
        self._run(partial(self._split, screen), "open a second chat")

    async def _split(self, screen: ChatScreen) -> None:
        shown = {p.session.model for p in screen.panes}
        others = [m for m in self.controller.ready_models() if m not in shown]
        if not others or len(screen.panes) >= 2:
            self.app.notify("no other ready model to open beside this one", severity="warning")
            return
        session = await self.controller.session(others[0])
        await screen.add_pane(self._pane(session))
