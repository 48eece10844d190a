"""The server's log: dated lines with a level, in the state folder, rotated by size.

A foreground server (tmux, a systemd user unit) also prints each line; a background one writes
only the file. Demo servers log to their own file, so a demo never shows in the real log or in
`gputui doctor --bundle`. The standard library's RotatingFileHandler does the rotation; its
files are opened through gputui's private opener (0600, never through a symlink).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from gputui.core.text import visible
from gputui.paths import private_dir, private_opener

MAX_BYTES = 5 << 20
BACKUPS = 3
FORMAT = "%(asctime)s %(levelname)s %(message)s"
LOGGER = "gputui.server"


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    def _open(self):  # type: ignore[no-untyped-def]
        return open(self.baseFilename, self.mode, encoding=self.encoding, opener=private_opener)


class _OneLine(logging.Formatter):
    """Outside text (model names, library errors) with control characters made visible: the
    log is read in terminals."""

    def format(self, record: logging.LogRecord) -> str:
        record.msg = visible(record.getMessage(), one_line=True)
        record.args = None
        return super().format(record)


def setup(path: Path, echo: bool) -> logging.Logger:
    """The server's logger, writing to `path` (rotated) and, when `echo`, to stdout."""
    logging.raiseExceptions = False  # a terminal that went away (SSH dropped) is no error of the server's
    log = logging.getLogger(LOGGER)
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    fmt = _OneLine(FORMAT)
    try:
        private_dir(path.parent)
        file_handler: logging.Handler = _PrivateRotatingFile(path, maxBytes=MAX_BYTES, backupCount=BACKUPS,
                                                             encoding="utf-8")
        file_handler.setFormatter(fmt)
        log.addHandler(file_handler)
    except OSError as e:
        echo = True
        print(f"gputui: the server log {path} cannot be written ({e.strerror or e}); logging to the terminal",
              file=sys.stderr)
    if echo:
        stream = logging.StreamHandler(sys.stdout)
        stream.setFormatter(fmt)
        log.addHandler(stream)
    return log
