"""The socket protocol: versioned JSON lines, one object per line, each way.

client: {"hello": {"protocol": 1, "version": V}}        server: {"hello": {"protocol": 1, "pid": ...}}
client: {"id": N, "op": OP, "args": {...}}               server: {"id": N, "result": ...}
                                                                 {"id": N, "error": {"type", "message"}}
                                                                 {"id": N, "item": ...}... {"id": N, "end": true}
A line that is not a JSON object, is over MAX_LINE_BYTES, or names no known op is answered with
one error line and the connection is closed; the server is unharmed.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

PROTOCOL = 1
MAX_LINE_BYTES = (32 << 20) + (1 << 16)  # a chat request carries its history (the worker's limit)
OPS = frozenset({"info", "snapshot", "models", "worker_pids", "load", "unload", "move", "reload", "plan_profile",
                 "apply_profile", "current_profile", "events", "chat", "cancel", "shutdown"})
STREAMS = frozenset({"events", "chat"})


class WireError(ValueError):
    """A line that breaks the protocol; str() is one line for the other side."""


def encode(msg: dict[str, Any]) -> bytes:
    # allow_nan=False: a NaN that slipped into a value is an error here, not a line the other
    # side must refuse (JSON has no NaN; Python's json would write one)
    return (json.dumps(msg, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False) + "\n").encode()


def _no_constant(name: str) -> Any:
    raise WireError(f"{name} is not a JSON value")


def peer_uid(sock: socket.socket | None) -> int | None:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED: the kernel's
    word, not the peer's), or None where the platform cannot say."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def peer_pid(sock: socket.socket | None) -> int | None:
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[0])


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE_BYTES:
        raise WireError(f"a message of {len(line)} bytes is over the {MAX_LINE_BYTES} byte limit")
    try:
        msg = json.loads(line, parse_constant=_no_constant)  # no NaN, Infinity, -Infinity
    except WireError:
        raise
    except (ValueError, UnicodeDecodeError):
        raise WireError("not a JSON line") from None
    except RecursionError:
        raise WireError("JSON nested too deeply") from None
    if not isinstance(msg, dict):
        raise WireError("a message must be a JSON object")
    return msg


def request(msg: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    """(id, op, args) of a client request, checked."""
    rid, op, args = msg.get("id"), msg.get("op"), msg.get("args", {})
    if isinstance(rid, bool) or not isinstance(rid, int):
        raise WireError("a request needs a whole-number id")
    if not isinstance(op, str) or op not in OPS:
        raise WireError(f"unknown op {str(op)[:40]!r}")
    if not isinstance(args, dict):
        raise WireError("args must be an object")
    return rid, op, args


def version_mismatch(ours: int, theirs: Any, side: str) -> str:
    return (f"protocol mismatch: this gputui speaks version {ours}, the {side} version {theirs}; "
            "run the same gputui on both sides (stop the server with `gputui stop`, then start again)")
