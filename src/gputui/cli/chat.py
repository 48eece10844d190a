"""`gputui chat NAME`: line-based chat with one model, for pipes and scripts. The model's words go
to stdout, everything else to stderr as `# ...` lines; slash commands as in the dashboard."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

from gputui.cli.common import attach, duration_arg, keep_alive, load_profile_or_explain, setting_arg


def add_parser(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    chat = sub.add_parser("chat", help="line-based chat with one model (pipes and scripts)")
    add_common(chat)
    chat.add_argument("model", help="model name in the profile (with --demo: chatglm3 or blip2)")
    chat.add_argument("--profile", help="profile that defines the model (default with --demo: demo)")
    chat.add_argument("--max-new-tokens", type=setting_arg("max_new_tokens"), metavar="N")
    chat.add_argument("--temperature", type=setting_arg("temperature"), metavar="T")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--keep-alive", type=duration_arg, default=False, metavar="DUR",
                      help="if it loads the model: unload after this long unused (30s, 10m, 2h, forever)")


def stdin_lines() -> asyncio.Queue[bytes]:
    """Lines of stdin, read by a daemon thread (b"" at the end). Not the loop's executor: a
    thread blocked in readline() there keeps asyncio.run from returning, so Ctrl-C at the
    prompt needed a second Ctrl-C. And os.read on the descriptor, not sys.stdin's buffered
    reader: a daemon thread blocked inside that reader holds its lock when Ctrl-C ends the
    interpreter, which then aborts ("Fatal Python error: _enter_buffered_busy", exit 134)."""
    import threading

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    fd = sys.stdin.fileno()

    def put(raw: bytes) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: we are exiting
            loop.call_soon_threadsafe(queue.put_nowait, raw)

    def read() -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                if pending:
                    put(pending)
                put(b"")
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                put(line + b"\n")

    threading.Thread(target=read, name="gputui-stdin", daemon=True).start()
    return queue


def _tell(event: str, text: str) -> None:
    """A line for the person at the terminal (stderr: stdout carries only the model's words)."""
    from gputui.core.text import visible

    print(f"# {event}: {visible(text)}" if event else f"# {visible(text)}", file=sys.stderr, flush=True)


async def _chat_line(text: str, session: Any, client: Any, profile: Any, args: argparse.Namespace) -> bool:
    """One line of `gputui chat`: a slash command as in the TUI (chat/commands.py), or a message.
    False when it was refused or its reply ended in an error."""
    from gputui.api.chat import DISCUSS_IMAGE
    from gputui.chat.commands import (
            LOCAL_VERBS,
        CommandRefused,
        parse_line,
        run_local,
    )
    from gputui.chat.session import stats_line
    from gputui.core.text import visible

    try:
        line = parse_line(text, session.caps.takes_images, session.model)
    except CommandRefused as e:
        _tell("error", str(e))
        return False
    if line.verb in LOCAL_VERBS:
        _tell("", run_local(session, line))
        return True
    question, image = line.text, line.image
    if line.verb == "describe":
        describer = await _describer(client, profile, args)
        if describer is None:
            return False
        _tell("", f"asking {describer.model} about {line.image} ...")
        async for ev in session.describe(describer, str(line.image), line.text):
            if ev.event in ("error", "notice"):
                _tell("error" if ev.event == "error" else "", ev.text)
                if ev.event == "error":
                    return False
        question, image = line.text or DISCUSS_IMAGE, None  # the caption is context now; ChatGLM3 reads no image
    ok = True
    async for ev in session.send(question, image=image):
        if ev.event == "text":
            sys.stdout.write(visible(ev.text))
            sys.stdout.flush()
        elif ev.event == "done":
            sys.stdout.write("\n")
            sys.stdout.flush()
            _tell("", stats_line(ev.stats))
        elif ev.event in ("error", "notice"):
            _tell(ev.event, ev.text)
            if ev.event == "error":
                ok = False
                sys.stdout.write("\n")
    return ok


async def _describer(client: Any, profile: Any, args: argparse.Namespace) -> Any:
    """A chat with a ready model that reads images (BLIP2), for /describe; loaded from the profile
    when it has one and it is not loaded yet."""
    from gputui.api.client import CommandRefused
    from gputui.chat.session import ChatSession, ready_describer
    from gputui.core.kinds import kind_named

    ready = ready_describer(client)  # the one rule, as the chat pane's
    if ready is None:
        entry = next((m for m in (profile.models if profile is not None else ())
                      if kind_named(m.kind).describes_images), None)
        if entry is None:
            where = f"profile {profile.name} has none" if profile is not None else "no --profile names one"
            _tell("error", f"no model that describes images (BLIP2) is ready, and {where}")
            return None
        _tell("", f"loading {entry.name} for /describe ...")
        try:
            view = await client.load(keep_alive(entry, args))
        except CommandRefused as e:
            _tell("error", f"{entry.name} did not load: {e}")
            return None
        if not view.ready:
            _tell("error", f"{entry.name} did not load: {view.error}")
            return None
        ready = ChatSession(client, view.name, view.kind, journaled=False)
    return ready


def _model_by_name(client: Any, profile: Any, name: str) -> tuple[Any, Any]:
    """(the request to load `name` with, the server's view of it or None): a model the server
    holds, in any state, by its own request (as `ollama run NAME` talks to what is loaded);
    else the profile's entry. One line naming what there is otherwise."""
    from gputui.errors import UserError

    view = client.model(name)
    if view is not None:
        entry = view.request
        if profile is not None:  # a profile's own settings for it (generation, keep-alive) win
            entry = next((m for m in profile.models if m.name == name), entry)
        return entry, view
    entry = next((m for m in profile.models if m.name == name), None) if profile is not None else None
    if entry is not None:
        return entry, None
    held = ", ".join(v.name for v in client.models()) or "none"
    where = f"profile {profile.name} has {', '.join(m.name for m in profile.models)}" if profile is not None \
        else "name a profile that defines it: --profile NAME"
    raise UserError(f"no model {name!r} in your gputui server (it holds: {held}); {where}")


async def chat_main(args: argparse.Namespace) -> int:
    from gputui.api.client import CommandRefused
    from gputui.chat.sanitize import decode_input
    from gputui.chat.session import ChatSession
    from gputui.core.text import visible
    from gputui.errors import UserError

    profile = load_profile_or_explain(args.profile or ("demo" if args.demo else ""), check_paths=True) \
        if (args.profile or args.demo) else None
    client = await attach(args.demo)
    try:
        entry, view = _model_by_name(client, profile, args.model)
        if view is None or not view.ready:  # loaded by the server now; a ready one starts no worker
            if view is not None:
                _tell("", f"{entry.name} was {view.state.value}: loading it again ...")
            try:
                view = await client.load(keep_alive(entry, args))
            except CommandRefused as e:
                raise UserError(f"{entry.name} did not load: {e}") from None
        if not view.ready:
            raise UserError(f"{entry.name} did not load: {view.error}")
        params = dict(entry.generation)
        if args.max_new_tokens is not None:
            params["max_new_tokens"] = args.max_new_tokens
        if args.temperature is not None:
            params["temperature"] = args.temperature
        system = args.system or params.pop("system_prompt", None)
        session = ChatSession(client, entry.name, entry.kind, system, params)
        where = "SIMULATED GPU" if args.demo else f"GPU {view.gpu_label}"
        print(visible(f"# {entry.name} ready ({where}); conversation saved to {session.journal_path}", one_line=True),
              file=sys.stderr, flush=True)
        lines, failed = stdin_lines(), 0
        while True:
            raw = await lines.get()
            if not raw:
                return 1 if failed else 0  # a script learns that some line got no answer
            line = decode_input(raw).rstrip("\n")
            if line.strip() and not await _chat_line(line, session, client, profile, args):
                failed += 1
    finally:
        await client.close()
