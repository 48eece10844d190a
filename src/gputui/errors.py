"""Errors a user can fix. Each str() is one line that names what to fix; the CLI prints it as
`gputui: ...` with exit code 2 and the TUI shows it as a message, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; printed as one line."""
