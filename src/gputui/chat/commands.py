"""The slash commands of a chat, one parser for the TUI and `gputui chat`, so a line means the
same in both. A word after a slash that is no command is refused with the list, never sent to
the model as text; `//` at the start sends a literal slash, and a path (`/usr/bin/x is ...`)
is a message, not a command.

    /set key=value ...     generation settings for this conversation (no value: show them)
    /system TEXT           replace the system prompt
    /describe IMAGE [q]    a describing model (BLIP2) describes the image into this conversation
    /image PATH [q]        ask a model that reads images (BLIP2) about one
    /clear                 forget the conversation so far (the journal keeps it)
    /help                  this list
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from gputui.core import generation
from gputui.core.generation import SETTINGS

VERBS = ("set", "system", "describe", "image", "clear", "help")
LOCAL_VERBS = ("set", "system", "clear", "help")  # done in the conversation itself: no reply follows
HELP = "commands: " + ", ".join(f"/{v}" for v in VERBS) + " (// sends a message starting with /)"
_COMMAND_WORD = re.compile(r"/[A-Za-z][A-Za-z_-]*")


class CommandRefused(ValueError):
    """str() is one line: what was wrong and what to type instead."""


@dataclass(frozen=True)
class Line:
    """What a typed line asks for. verb "say": a message (with `image` for a model that reads
    images); otherwise one of VERBS, with `text` its argument."""

    verb: str
    text: str = ""
    image: str | None = None


def parse_line(text: str, takes_images: bool, model: str = "this model") -> Line:
    """One typed line, as a Line or CommandRefused."""
    stripped = text.strip()
    if stripped.startswith("//"):
        return _message(text.lstrip()[1:], takes_images, model)
    first, _, rest = stripped.partition(" ")
    if not _COMMAND_WORD.fullmatch(first):
        return _message(text, takes_images, model)
    verb, rest = first[1:].lower(), rest.strip()
    if verb not in VERBS:
        raise CommandRefused(f"unknown command {first}; {HELP}")
    if verb == "system" and not rest:
        raise CommandRefused("usage: /system TEXT (the new system prompt)")
    if verb == "image":
        if not takes_images:
            raise CommandRefused(f"{model} reads no images: /describe IMAGE [question] has a describing model "
                                 "(BLIP2) describe it into this conversation")
        image, question = _image_and_question(rest, "/image PATH [question]")
        return Line("say", question, image)
    if verb == "describe":
        if takes_images:
            raise CommandRefused(f"{model} reads images itself: /image PATH [question]")
        image, question = _image_and_question(rest, "/describe IMAGE [question]")
        return Line("describe", question, image)
    return Line(verb, rest)


def _message(text: str, takes_images: bool, model: str) -> Line:
    if takes_images:
        raise CommandRefused(f"{model} needs an image: /image PATH [question]")
    return Line("say", text)


def _image_and_question(rest: str, usage: str) -> tuple[str, str]:
    try:
        parts = shlex.split(rest)
    except ValueError:
        parts = rest.split()
    if not parts:
        raise CommandRefused(f"usage: {usage}")
    return parts[0], " ".join(parts[1:])


def apply_settings(params: dict[str, Any], text: str) -> str:
    """'/set max_new_tokens=256 temperature=0.7 top_p=0.9' for this conversation; one line back.
    Nothing changes unless every item is valid (checked as profiles and flags are)."""
    changed: dict[str, Any] = {}
    for item in text.split():
        key, _, raw = item.partition("=")
        if key not in SETTINGS or not raw:
            return f"usage: /set {' '.join(f'{k}=N' for k in SETTINGS)}  (unknown or empty: {item!r})"
        try:
            changed[key] = generation.parse(key, raw)
        except ValueError as e:
            return str(e)
    params.update(changed)
    now = ", ".join(f"{k}={params[k]}" for k in SETTINGS if k in params) or "model defaults"
    return f"settings: {now}" if changed else f"settings: {now}  (change with /set key=value)"


def run_local(session: Any, line: Line) -> str:
    """A LOCAL_VERBS command on a ChatSession; the line to show the user."""
    if line.verb == "set":
        return apply_settings(session.params, line.text)
    if line.verb == "system":
        session.set_system(line.text)
        return "system prompt set"
    if line.verb == "clear":
        session.clear()
        return "conversation cleared (the journal keeps it)"
    return HELP
