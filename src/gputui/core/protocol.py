"""The worker protocol: one JSON object per line, each way.

parent -> worker: {"op": "load", "spec": {...}} | {"op": "generate", "id": str, ...}
                  | {"op": "cancel", "id": str} | {"op": "shutdown"}
worker -> parent: {"event": "hello" | "stage" | "ready" | "token" | "done" | "error" | "fatal", ...}
                  | {"event": "alive"} once a second, from a thread: a worker that goes quiet
                    (SIGSTOPped, or hung with the GIL held) is known to be stuck

Decoding is strict and bounded: anything that is not a JSON object with a known "op"/"event"
is a ProtocolError with one line of explanation, never a crash of the reader.
"""

from __future__ import annotations

import json
from typing import Any

MAX_LINE_BYTES = 32 << 20  # a long conversation fits; a runaway writer does not
OPS = frozenset({"load", "generate", "cancel", "shutdown"})
EVENTS = frozenset({"hello", "imported", "stage", "ready", "token", "done", "error", "fatal", "alive", "log"})
HEARTBEAT_S = 1.0  # how often a worker says "alive"

class ProtocolError(ValueError):
    pass


def encode(msg: dict[str, Any]) -> bytes:
    return (json.dumps(msg, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _decode(line: bytes | str, key: str, allowed: frozenset[str]) -> dict[str, Any]:
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"message of {len(line)} bytes is over the {MAX_LINE_BYTES} byte limit")
    try:
        msg = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError(f"not JSON: {e.msg if hasattr(e, 'msg') else e}") from None
    except RecursionError:
        raise ProtocolError("JSON nested too deeply") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"expected a JSON object, got {type(msg).__name__}")
    value = msg.get(key)
    if not isinstance(value, str) or value not in allowed:
        raise ProtocolError(f"unknown {key} {_short(value)}")
    for field, types in FIELD_TYPES.get(value, {}).items():
        if field in msg and not isinstance(msg[field], types):
            raise ProtocolError(f"{key} {value!r}: field {field!r} is {type(msg[field]).__name__}")
    return msg


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# The fields each side reads, with the types it relies on: a message that breaks them is refused
# here, so the code behind never meets a number where it expects text.
_ID: dict[str, type | tuple[type, ...]] = {"id": str}
FIELD_TYPES: dict[str, dict[str, type | tuple[type, ...]]] = {
    "load": {"spec": dict},
    "generate": {**_ID, "messages": list, "params": dict, "image": str, "question": str},
    "cancel": _ID,
    "stage": {"stage": str},
    "token": {**_ID, "text": str, "notice": str},
    "done": _ID,
    "error": {**_ID, "message": str},
    "fatal": {"stage": str, "message": str},
    "ready": {"timings": dict, "weight_bytes": int, "runtime": dict},
    "log": {"message": str},
}


def decode_event(line: bytes | str) -> dict[str, Any]:
    """A worker -> parent message."""
    return _decode(line, "event", EVENTS)


def decode_op(line: bytes | str) -> dict[str, Any]:
    """A parent -> worker message."""
    return _decode(line, "op", OPS)
