"""Every conversation is an append-only JSONL journal in the user's data folder.

Lines: {"type": "meta", ...} first; {"type": "message", "role": ..., "content": ...} for each
user / system / context message, on disk (fsync) before it goes to the worker; the reply as
{"type": "chunk", "reply": n, "text": ...} lines, flushed at least every second; and
{"type": "reply_end", "reply": n, "complete": bool, ...} at the end. A reply with no end line
(the app or worker died) reads back as incomplete. A torn last line is skipped, never fatal.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os

from gputui.paths import conversations_dir, data_dir, private_dir, private_opener

FLUSH_EVERY_S = 1.0


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


def read_transcript(path: Path) -> Transcript:
    meta: dict[str, Any] = {}
    messages: list[Message] = []
    replies: dict[int, Message] = {}
    skipped = 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict):
                    raise ValueError
            except ValueError:
                skipped += 1  # a torn or foreign line: skip it, keep the rest
                continue
            kind = rec.get("type")
            if kind == "meta":
                meta = rec
            elif kind == "message":
                messages.append(Message(str(rec.get("role")), str(rec.get("content", "")), image=rec.get("image")))
            elif kind == "chunk":
                n = int(rec.get("reply", -1))
                if n not in replies:
                    replies[n] = Message("assistant", "", complete=False)
                    messages.append(replies[n])
                replies[n].content += str(rec.get("text", ""))
            elif kind == "reply_end":
                n = int(rec.get("reply", -1))
                if n not in replies:
                    replies[n] = Message("assistant", "", complete=False)
                    messages.append(replies[n])
                replies[n].complete = bool(rec.get("complete"))
                replies[n].stats = rec.get("stats") or {}
    return Transcript(path, meta, messages, skipped)


def _ends_mid_line(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


def list_conversations() -> list[Path]:
    d = conversations_dir()
    return sorted(d.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True) if d.is_dir() else []


class ConversationLog:
    """Appends one conversation's journal; reopen an old one with `ConversationLog.open`."""

    def __init__(self, path: Path, next_reply: int = 0) -> None:
        self.path = path
        self._reply = next_reply
        self._pending: list[str] = []
        self._last_flush = time.monotonic()
        self._tail_checked = False

    @classmethod
    async def create(cls, model: str, kind: str, **meta: Any) -> ConversationLog:
        private_dir(data_dir())
        d = private_dir(conversations_dir())
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = d / f"{stamp}-{model}-{uuid.uuid4().hex[:6]}.jsonl"
        log = cls(path)
        await log._append({"type": "meta", "model": model, "kind": kind, "created": time.time(), **meta})
        return log

    @classmethod
    def open(cls, path: Path) -> tuple[ConversationLog, Transcript]:
        t = read_transcript(path)
        replies = sum(1 for m in t.messages if m.role == "assistant")
        return cls(path, next_reply=replies), t

    async def _append(self, *records: dict[str, Any], sync: bool = True) -> None:
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if not self._tail_checked:
            # A journal cut mid-line (disk full, power loss) ends without a newline; end that
            # fragment first, or our first record would be glued to it and lost with it.
            self._tail_checked = True
            if _ends_mid_line(self.path):
                data = "\n" + data
        async with aiofiles.open(self.path, "a", encoding="utf-8", opener=private_opener) as f:
            await f.write(data)
            await f.flush()
            if sync:
                await aiofiles.os.wrap(os.fsync)(f.fileno())

    async def user_message(self, content: str, role: str = "user", image: str | None = None) -> None:
        """On disk before the message goes anywhere else."""
        rec: dict[str, Any] = {"type": "message", "role": role, "content": content, "t": time.time()}
        if image:
            rec["image"] = image
        await self._append(rec)

    def begin_reply(self) -> int:
        n = self._reply
        self._reply += 1
        self._pending = []
        self._last_flush = time.monotonic()
        return n

    async def reply_text(self, n: int, text: str) -> None:
        """Buffer reply text; written when a second has passed since the last write."""
        self._pending.append(text)
        if time.monotonic() - self._last_flush >= FLUSH_EVERY_S:
            await self.flush_reply(n)

    async def flush_reply(self, n: int) -> None:
        if self._pending:
            text, self._pending = "".join(self._pending), []
            await self._append({"type": "chunk", "reply": n, "text": text}, sync=False)
        self._last_flush = time.monotonic()

    async def end_reply(self, n: int, complete: bool, **info: Any) -> None:
        await self.flush_reply(n)
        await self._append({"type": "reply_end", "reply": n, "complete": complete, "t": time.time(), **info})
