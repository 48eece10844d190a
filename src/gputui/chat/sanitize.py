"""User and model text, made safe to send and to show.

Shown literally, never interpreted: control characters (NUL, ESC of ANSI sequences, ...) are
drawn as their Unicode control pictures; Textual/Rich markup is never parsed because every
widget shows text with markup off. Oversized input is refused with a message, not swallowed.
"""

from __future__ import annotations

MAX_MESSAGE_CHARS = 200_000


class InputRefused(ValueError):
    pass


def visible(text: str) -> str:
    """Control characters (except newline and tab) as visible symbols: '\\x1b' -> '␛'."""
    out = []
    for ch in text:
        o = ord(ch)
        if o < 32 and ch not in "\n\t":
            out.append(chr(0x2400 + o))
        elif o == 127:
            out.append("␡")
        else:
            out.append(ch)
    return "".join(out)


def clean_prompt(text: str) -> str:
    """What goes to the model: NUL bytes removed (tokenizers choke on them), the rest as typed."""
    if len(text) > MAX_MESSAGE_CHARS:
        raise InputRefused(f"message is {len(text):,} characters; the limit is {MAX_MESSAGE_CHARS:,}: "
                           "attach long text as a file or shorten it")
    return text.replace("\x00", "")


def decode_input(raw: bytes) -> str:
    """Bytes from a pipe: invalid UTF-8 becomes U+FFFD instead of an exception."""
    return raw.decode("utf-8", errors="replace")
