"""User and model text, made safe to send and to show.

Shown literally, never interpreted: control characters (NUL, ESC of ANSI sequences, ...) are
drawn as their Unicode control pictures; Textual/Rich markup is never parsed because every
widget shows text with markup off. Oversized input is refused with a message, not swallowed.
"""

from __future__ import annotations

from gputui.core.text import visible

__all__ = ["MAX_MESSAGE_CHARS", "InputRefused", "visible", "clean_prompt", "decode_input"]

MAX_MESSAGE_CHARS = 200_000


class InputRefused(ValueError):
    pass


def clean_prompt(text: str) -> str:
    """What goes to the model: NUL bytes removed (tokenizers choke on them), the rest as typed."""
    if len(text) > MAX_MESSAGE_CHARS:
        raise InputRefused(f"message is {len(text):,} characters; the limit is {MAX_MESSAGE_CHARS:,}: "
                           "attach long text as a file or shorten it")
    return text.replace("\x00", "")


def decode_input(raw: bytes) -> str:
    """Bytes from a pipe: invalid UTF-8 becomes U+FFFD instead of an exception."""
    return raw.decode("utf-8", errors="replace")
