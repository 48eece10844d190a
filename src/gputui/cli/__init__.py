"""The command line: the composition root that wires telemetry, a scheduler or a server's client,
and the dashboard or a line-mode front end. `main` parses; each subcommand family has its module
(server: serve/ps/stop; commands: run/profiles/config; chat; doctor); `common` holds what they
share. Heavy imports stay inside the functions that need them, so `gputui ps` starts fast."""

from gputui.cli.main import main

__all__ = ["main"]
