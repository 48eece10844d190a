"""The bearer token the API asks for over TCP (`gputui serve --api --api-listen HOST:PORT`): made
once, 32 random bytes, in a file only the user can read, and kept across restarts so clients
stay configured; delete the file to have a new one made."""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path


def api_token(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    if text:
        os.chmod(path, 0o600)  # ours alone, whatever loosened it
        return text
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # 0600 from the first byte
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return token


class ListenRefused(ValueError):
    """One line: why this --api-listen address is not used."""


def listen_address(raw: str, anywhere: bool) -> tuple[str, int]:
    """HOST:PORT for the API's TCP listener; a host other than loopback only with `anywhere`
    (every machine that can reach it may then try tokens)."""
    host, sep, port = raw.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ListenRefused(f"--api-listen {raw}: give HOST:PORT, e.g. 127.0.0.1:8000")
    host = "127.0.0.1" if host == "localhost" else host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ListenRefused(f"--api-listen {raw}: {host} is not an IP address (use 127.0.0.1 or ::1)") from None
    if not loopback and not anywhere:
        raise ListenRefused(f"--api-listen {raw}: {host} is reachable from other machines; gputui listens there "
                            "only with --api-listen-anywhere (the token is then all that guards your models)")
    return host, int(port)
