"""Reading a file someone else may have put in our way: never blocking on a FIFO, never taking
more than a limit. One implementation for checkpoints, journals, profiles, the settings file and
image previews (each once had its own)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any, BinaryIO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOMLDecodeError = tomllib.TOMLDecodeError


class NotRegularFile(OSError):
    """A FIFO, a device or a folder where a file should be; str() says which path."""


class FileTooLarge(OSError):
    """More bytes than the reader's limit; str() says how many were allowed."""


def open_regular(path: Path | str) -> BinaryIO:
    """Open for reading without ever blocking on a FIFO (O_NONBLOCK, then back to blocking once
    it is known to be a regular file). OSError (NotRegularFile among them) otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegularFile(f"{path}: not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_small(path: Path | str, limit: int) -> bytes:
    """A whole small file (a profile, the settings), or FileTooLarge past `limit` bytes."""
    with open_regular(path) as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise FileTooLarge(f"{path}: larger than {limit} bytes")
    return raw


def loads_toml(text: str) -> dict[str, Any]:
    """tomllib (tomli before 3.11): data only, no code runs. TOMLDecodeError or RecursionError."""
    return tomllib.loads(text)
