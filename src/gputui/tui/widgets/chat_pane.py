"""One conversation on screen: messages, a streamed Markdown reply, stats, and the input.

Replies arrive token by token from the worker through the scheduler; a Textual worker task
consumes them, so the UI never waits on generation. User text is shown with markup off and
control characters made visible; model text goes through Markdown, never through markup.
"""

from __future__ import annotations

import asyncio
from typing import Any

from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Input, Markdown, Static

from gputui.api.chat import DISCUSS_IMAGE
from gputui.chat.commands import (
    LOCAL_VERBS,
    CommandRefused,
    Line,
    parse_line,
    run_local,
)
from gputui.chat.sanitize import MAX_MESSAGE_CHARS
from gputui.chat.session import ChatSession, stats_line
from gputui.core.text import visible
from gputui.tui.outside import outside, outside_block
from gputui.tui.widgets.image_preview import image_preview


class HistoryInput(Input):
    """An Input with shell-like history on up/down, and a paste size limit."""

    BINDINGS = [Binding("up", "history(-1)", show=False), Binding("down", "history(1)", show=False)]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.history: list[str] = []
        self._pos = 0

    def remember(self, text: str) -> None:
        if text and (not self.history or self.history[-1] != text):
            self.history.append(text)
        self._pos = len(self.history)

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        self._pos = max(0, min(len(self.history), self._pos + step))
        self.value = self.history[self._pos] if self._pos < len(self.history) else ""
        self.cursor_position = len(self.value)

    def _on_paste(self, event: events.Paste) -> None:
        """Refuse an oversized paste; keep every line of a multi-line one (Input's own handler
        keeps only the first, silently): its line breaks are shown as ␤ in the one-line box
        and sent as line breaks (`message_text`). Otherwise Input's own handler inserts it."""
        if len(event.text) + len(self.value) > MAX_MESSAGE_CHARS:
            event.prevent_default()
            event.stop()
            self.app.notify(f"paste of {len(event.text):,} characters refused: the limit is {MAX_MESSAGE_CHARS:,}",
                            severity="warning")
        elif "\n" in event.text or "\r" in event.text:
            event.prevent_default()
            event.stop()
            text = event.text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").replace("\n", LINE_BREAK)
            self.insert_text_at_cursor(text)


LINE_BREAK = "\u2424"  # ␤: a line break of a pasted message, in the one-line input


def message_text(value: str) -> str:
    """What the input holds, as the message to send: pasted line breaks restored."""
    return value.replace(LINE_BREAK, "\n")


class ChatPane(Vertical):
    DEFAULT_CSS = """
    ChatPane { border: round $panel-lighten-2; height: 1fr; width: 1fr; }
    ChatPane:focus-within { border: heavy $accent; }
    ChatPane > #title { text-style: bold; height: 1; }
    ChatPane:focus-within > #title { background: $accent; color: $text; }
    ChatPane > #messages { height: 1fr; }
    ChatPane .user { color: $text; background: $boost; margin: 1 0 0 0; }
    ChatPane .notice { color: $warning; }
    ChatPane .error { color: $error; }
    ChatPane .stats { color: $text-muted; }
    ChatPane Markdown { margin: 0; padding: 0; }
    """

    def __init__(self, session: ChatSession, describer: Any = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.session = session
        self.describer = describer  # a callable returning a BLIP2 ChatSession, for /describe
        self.replies = 0
        # set the moment a message is accepted (not when its reply starts), so a second Enter
        # pressed quickly is refused instead of sent alongside
        self.replying = False
        self.stopping = False  # Esc asked the worker to stop; a second Esc leaves without waiting

    def compose(self) -> ComposeResult:
        yield Static(outside(f"{self.session.model} ({self.session.kind})"), id="title", markup=False)
        # not focusable: Tab goes from one conversation's input to the other's, never to a
        # scroll area where typing would go nowhere (the mouse wheel still scrolls it)
        yield VerticalScroll(id="messages", can_focus=False)
        hint = self.session.caps.input_hint
        yield HistoryInput(placeholder=hint, id="prompt", max_length=MAX_MESSAGE_CHARS)

    def on_mount(self) -> None:
        self.query_one("#prompt", HistoryInput).focus()

    def note(self, text: str, cls: str = "notice") -> None:
        box = self.query_one("#messages", VerticalScroll)
        box.mount(Static(outside_block(text), classes=cls, markup=False))
        box.scroll_end(animate=False)

    def show_history(self, messages: list[Any]) -> None:
        """Messages of a reopened conversation."""
        box = self.query_one("#messages", VerticalScroll)
        for m in messages:
            if m.role == "assistant":
                box.mount(Markdown(visible(m.content) + ("" if m.complete else "\n\n*(incomplete)*")))
            else:
                box.mount(Static(outside_block(f"{m.role}: {m.content}"), classes="user", markup=False))

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = message_text(event.value)
        inp = self.query_one("#prompt", HistoryInput)
        if not text.strip():
            return  # an empty message is ignored
        if self.replying:  # the text stays in the box, to send once the reply is done
            self.app.notify("still replying: press Esc to stop it first", severity="warning")
            return
        inp.remember(event.value)
        inp.value = ""
        try:
            line = parse_line(text, self.session.caps.takes_images, self.session.model)
        except CommandRefused as e:
            self.note(str(e), "error")
            return
        if line.verb in LOCAL_VERBS:
            if line.verb == "clear":
                self.query_one("#messages", VerticalScroll).remove_children()
            self.note(run_local(self.session, line))
        else:  # say, describe: a reply follows
            self.replying, self.stopping = True, False
            self.converse(text, line)

    def on_worker_state_changed(self, event: Any) -> None:
        self.app.report_failed_command(event)  # type: ignore[attr-defined]

    @work(group="chat", exclusive=False, exit_on_error=False, name="chat")
    async def converse(self, text: str, line: Line) -> None:
        try:
            await self._converse(text, line)
        finally:
            self.replying = self.stopping = False

    async def _converse(self, text: str, line: Line) -> None:
        box = self.query_one("#messages", VerticalScroll)
        image, question = line.image, line.text
        if line.verb == "describe" and image is not None:
            if not await self._describe(image, question):
                return
            question = question or DISCUSS_IMAGE
            image = None
        await box.mount(Static(outside_block(f"you: {text}"), classes="user", markup=False))
        if image:
            preview = await asyncio.to_thread(image_preview, image)  # a slow disk must not freeze keys
            if preview is not None:
                await box.mount(Static(preview, markup=False))
        await self._stream(self.session.send(question, image=image))

    async def _describe(self, image: str, question: str) -> bool:
        """Describe then discuss: a describing model's (BLIP2's) caption goes into this
        conversation as context."""
        blip = self.describer() if self.describer else None
        if blip is None:
            self.note("no model that describes images (BLIP2) is ready: load one first", "error")
            return False
        self.note(f"asking {blip.model} about {image} ...")
        async for ev in self.session.describe(blip, image, question):
            if ev.event == "error":
                self.note(ev.text, "error")
                return False
            if ev.event == "notice":
                self.note(ev.text)
        return True

    async def _stream(self, events_iter: Any) -> None:
        box = self.query_one("#messages", VerticalScroll)
        md = Markdown("")
        await box.mount(md)
        stream = Markdown.get_stream(md)
        try:
            async for ev in events_iter:
                if ev.event == "text":
                    await stream.write(visible(ev.text))  # Markdown, but never a control character
                    box.scroll_end(animate=False)
                elif ev.event == "notice":
                    self.note(ev.text)
                elif ev.event == "error":
                    self.note(ev.text, "error")
                elif ev.event == "done":
                    self.replies += 1
                    self.note(stats_line(ev.stats), "stats")
        finally:
            await stream.stop()
            box.scroll_end(animate=False)

    def request_stop(self) -> None:
        """Ask the worker to stop the reply (it stops within one token), without waiting here."""
        self.stopping = True
        self.run_worker(self.session.stop(), group="chat-stop", exit_on_error=False, name="stop the reply")

    def abandon(self) -> None:
        """Stop waiting for a reply that does not stop (a stalled worker): what came is kept,
        marked incomplete, and the conversation can go on."""
        self.app.workers.cancel_group(self, "chat")
        self.note("left the reply without waiting; what came is saved, marked incomplete")

    def clear(self) -> None:
        self.session.clear()
        self.query_one("#messages", VerticalScroll).remove_children()
