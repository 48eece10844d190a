"""Every conversation is an append-only JSONL journal in the user's data folder, written by
the side that runs the model (the server, or the process that embeds the scheduler): a client
that detaches or dies mid-reply loses nothing, and the reply is complete on disk.

Lines: {"type": "meta", ...} first; {"type": "message", "role": ..., "content": ...} for each
user / system / context message, on disk (fsync) before it goes to the worker; the reply as
{"type": "chunk", "reply": n, "text": ...} lines, flushed at least every second; and
{"type": "reply_end", "reply": n, "complete": bool, ...} at the end. A reply with no end line
(the app or worker died) reads back as incomplete. A torn or foreign line, anywhere, is
skipped and counted, never fatal; reading is one linear pass (a journal can be hundreds of MB).

A disk that fills, or a folder that cannot be written, never ends a conversation: the journal
stops, says why once (`take_failure`), and the conversation goes on in memory; what was
already written stays as it was.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os

from gputui.core.files import open_regular
from gputui.paths import append_whole, conversations_dir, data_dir, private_dir

FLUSH_EVERY_S = 1.0
META_LINE_MAX_BYTES = 64 * 1024


@dataclass
class Message:
    role: str
    content: str
    complete: bool = True
    image: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Transcript:
    path: Path
    meta: dict[str, Any]
    messages: list[Message]
    skipped_lines: int = 0
    next_reply: int = 0  # the number the next reply gets: past every reply number in the file


class _Reply:
    """A reply being put together from its chunks (joined once, at the end: linear)."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self.parts: list[str] = []


def _record(raw: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return rec if isinstance(rec, dict) else None


def read_transcript(path: Path) -> Transcript:
    meta: dict[str, Any] = {}
    messages: list[Message] = []
    replies: dict[int, _Reply] = {}
    skipped = 0
    with open_regular(path) as f:
        for raw in f:
            rec = _record(raw)
            try:
                if rec is None:
                    raise ValueError("not a JSON object")
                line_type = rec.get("type")
                if line_type == "meta":
                    meta = rec
                elif line_type == "message":
                    messages.append(Message(str(rec.get("role")), str(rec.get("content", "")),
                                            image=str(rec["image"]) if rec.get("image") else None))
                elif line_type in ("chunk", "reply_end"):
                    n = _reply_number(rec)
                    reply = replies.get(n)
                    if reply is None:
                        reply = replies[n] = _Reply(Message("assistant", "", complete=False))
                        messages.append(reply.message)
                    if line_type == "chunk":
                        reply.parts.append(str(rec.get("text", "")))
                    else:
                        reply.message.complete = rec.get("complete") is True
                        stats = rec.get("stats")
                        reply.message.stats = stats if isinstance(stats, dict) else {}
                else:
                    raise ValueError(f"unknown line type {line_type!r}")
            except (ValueError, TypeError, KeyError):
                skipped += 1  # a torn or foreign line: skip it, keep the rest
    for reply in replies.values():
        reply.message.content = "".join(reply.parts)
    return Transcript(path, meta, messages, skipped, next_reply=max(replies, default=-1) + 1)


def _reply_number(rec: dict[str, Any]) -> int:
    n = rec.get("reply")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError("reply number is not a whole number")
    return n


def read_meta(path: Path) -> dict[str, Any]:
    """The journal's first line only (the palette lists ten journals on every keystroke)."""
    try:
        with open_regular(path) as f:
            rec = _record(f.readline(META_LINE_MAX_BYTES))
    except OSError:
        return {}
    return rec if rec is not None and rec.get("type") == "meta" else {}


def _ends_mid_line(path: Path) -> bool:
    try:
        with open_regular(path) as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return bool(f.read(1) != b"\n")
    except FileNotFoundError:
        return False


def list_conversations() -> list[Path]:
    d = conversations_dir()
    if not d.is_dir():
        return []
    found = []
    for p in d.glob("*.jsonl"):
        try:
            found.append((p.stat().st_mtime, p))
        except OSError:  # gone since the listing
            continue
    return [p for _, p in sorted(found, reverse=True)]


BACKLOG_MAX_CHARS = 64 << 20  # what waits in memory for a disk that is full or gone
RETRY_EVERY_S = 1.0


class ConversationLog:
    """Appends one conversation's journal; reopen an old one with `ConversationLog.open`.

    A write that fails (a full disk, no file descriptors left) keeps its records in memory and
    is tried again with the next write, at most once a second: when space comes back, the
    journal catches up and nothing the conversation said is lost. `take_notice` says so once
    when saving stops and once when it resumes. Each reply has its own buffer: two replies of
    one conversation (two clients) are never mixed in one saved reply."""

    def __init__(self, path: Path, next_reply: int = 0) -> None:
        self.path = path
        self._reply = next_reply
        self._pending: dict[int, list[str]] = {}  # reply number -> text not yet written
        self._last_flush: dict[int, float] = {}
        self._tail_checked = False
        self.failure: str | None = None  # why the journal cannot be written now
        self._backlog: list[str] = []  # records waiting for the disk, in order
        self._backlog_chars = 0
        self._lost_records = 0  # dropped from a backlog over BACKLOG_MAX_CHARS
        self._retry_at = 0.0
        self._notices: list[str] = []
        self._writing = asyncio.Lock()

    @classmethod
    async def create(cls, model: str, kind: str, **meta: Any) -> ConversationLog:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        log = cls(conversations_dir() / f"{stamp}-{model}-{uuid.uuid4().hex[:6]}.jsonl")
        try:
            private_dir(data_dir())
            private_dir(conversations_dir())
        except OSError as e:
            log._stop(e)
        await log._append({"type": "meta", "model": model, "kind": kind, "created": time.time(), **meta})
        return log

    @classmethod
    def open(cls, path: Path) -> tuple[ConversationLog, Transcript]:
        t = read_transcript(path)
        return cls(path, next_reply=t.next_reply), t

    def _stop(self, e: OSError) -> None:
        if self.failure is None:
            self.failure = str(e) if e.filename is None and e.strerror is None else f"{self.path}: {e.strerror or e}"
            self._notices.append(f"this conversation cannot be saved now ({self.failure}); it goes on, kept in "
                                 "memory, and is saved when the disk can take it again")
        self._retry_at = time.monotonic() + RETRY_EVERY_S

    def take_notice(self) -> str | None:
        """What the user should hear about saving since the last call: that it stopped, or
        that it resumed (each once); None while nothing changed."""
        if not self._notices:
            return None
        text = " / ".join(self._notices)
        self._notices.clear()
        return text

    async def _append(self, *records: dict[str, Any], sync: bool = True) -> None:
        for r in records:
            line = json.dumps(r, ensure_ascii=False) + "\n"
            self._backlog.append(line)
            self._backlog_chars += len(line)
        while self._backlog_chars > BACKLOG_MAX_CHARS and len(self._backlog) > 1:
            self._backlog_chars -= len(self._backlog.pop(0))  # bounded: the oldest waiting record goes
            self._lost_records += 1
        async with self._writing:  # one write at a time, in order: two replies never share a record
            if not self._backlog:
                return  # a write that ran meanwhile took ours
            if self.failure is not None and time.monotonic() < self._retry_at and not sync:
                return  # still failing: try again with a later write
            taken = len(self._backlog)
            data = "".join(self._backlog)
            try:
                if not self._tail_checked:
                    # A journal cut mid-line (power loss, another writer) ends without a newline;
                    # end that fragment first, or our first record would be glued to it and lost.
                    if await aiofiles.os.wrap(_ends_mid_line)(self.path):
                        data = "\n" + data
                await aiofiles.os.wrap(append_whole)(self.path, data, sync)
            except OSError as e:  # a full disk, no descriptors left, a folder gone read-only
                self._stop(e)
                return
            self._tail_checked = True
            del self._backlog[:taken]
            self._backlog_chars = sum(len(x) for x in self._backlog)
            if self.failure is not None:
                lost = f"; {self._lost_records} records did not fit in memory meanwhile" if self._lost_records else ""
                self._notices.append(f"this conversation is saved again ({self.path.name}){lost}")
                self.failure, self._lost_records = None, 0

    async def user_message(self, content: str, role: str = "user", image: str | None = None) -> None:
        """On disk before the message goes anywhere else."""
        rec: dict[str, Any] = {"type": "message", "role": role, "content": content, "t": time.time()}
        if image:
            rec["image"] = image
        await self._append(rec)

    def begin_reply(self) -> int:
        n = self._reply
        self._reply += 1
        self._pending[n] = []
        self._last_flush[n] = time.monotonic()
        return n

    async def reply_text(self, n: int, text: str) -> None:
        """Buffer reply text; written when a second has passed since the last write."""
        self._pending.setdefault(n, []).append(text)
        if time.monotonic() - self._last_flush.get(n, 0.0) >= FLUSH_EVERY_S:
            await self.flush_reply(n)

    async def flush_reply(self, n: int) -> None:
        parts = self._pending.get(n)
        if parts:
            self._pending[n] = []
            await self._append({"type": "chunk", "reply": n, "text": "".join(parts)}, sync=False)
        self._last_flush[n] = time.monotonic()

    async def end_reply(self, n: int, complete: bool, **info: Any) -> None:
        """The reply's last text and its end line, on disk (fsync) when this returns: the
        caller says "done" only after it."""
        parts = self._pending.pop(n, [])
        self._last_flush.pop(n, None)
        records: list[dict[str, Any]] = []
        if parts:
            records.append({"type": "chunk", "reply": n, "text": "".join(parts)})
        records.append({"type": "reply_end", "reply": n, "complete": complete, "t": time.time(), **info})
        await self._append(*records)


CONVERSATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def new_conversation_id(model: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-{uuid.uuid4().hex[:6]}"


def conversation_path(conversation_id: str) -> Path:
    """The journal of a conversation id. An id is a file stem, never a path: a client cannot
    name a file outside the conversations folder."""
    if not CONVERSATION_ID.match(conversation_id):
        raise ValueError(f"{conversation_id[:40]!r} is not a conversation id")
    return conversations_dir() / f"{conversation_id}.jsonl"


class Journals:
    """The journals being written, by conversation id (the serving side keeps one per
    conversation it has seen, so reply numbers continue across requests). An old journal is
    read on a thread (it can be hundreds of MB), and two requests for one conversation that
    arrive together share one log."""

    def __init__(self) -> None:
        self._open: dict[str, asyncio.Future[ConversationLog]] = {}

    async def get(self, conversation_id: str, meta: dict[str, Any]) -> ConversationLog:
        fut = self._open.get(conversation_id)
        if fut is None:
            path = conversation_path(conversation_id)  # ValueError for what is not an id, before anything
            fut = self._open[conversation_id] = asyncio.ensure_future(self._open_log(path, meta))
        try:
            return await asyncio.shield(fut)
        except BaseException:
            if fut.done() and (fut.cancelled() or fut.exception() is not None):
                self._open.pop(conversation_id, None)
            raise

    @staticmethod
    async def _open_log(path: Path, meta: dict[str, Any]) -> ConversationLog:
        if await asyncio.to_thread(path.exists):
            log, _ = await asyncio.to_thread(ConversationLog.open, path)
            return log
        log = ConversationLog(path)
        try:
            private_dir(data_dir())
            private_dir(conversations_dir())
        except OSError as e:
            log._stop(e)
        await log._append({"type": "meta", "created": time.time(), **meta})
        return log
