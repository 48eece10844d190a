"""What the commands share: the telemetry or one line why not, a profile or one line why not,
and an in-process client for commands that run the scheduler themselves, or the user's server."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def open_telemetry_or_explain(demo: bool):  # type: ignore[no-untyped-def]
    from gputui.errors import UserError
    from gputui.hardware import TelemetryUnavailable, open_telemetry

    try:
        return open_telemetry(demo=demo)
    except TelemetryUnavailable as e:
        raise UserError(str(e)) from None


def load_profile_or_explain(name: str, check_paths: bool = True):  # type: ignore[no-untyped-def]
    from gputui.core.profiles import ProfileError
    from gputui.errors import UserError
    from gputui.paths import load_named_profile

    try:
        return load_named_profile(name, check_paths=check_paths)
    except ProfileError as e:
        raise UserError(str(e)) from None


def local_client(telemetry: Any) -> Any:
    """The scheduler for this process, behind the client seam (the one thing commands use)."""
    from gputui.scheduler.client import LocalClient
    from gputui.scheduler.factory import make_scheduler

    settings = load_settings()
    return LocalClient(make_scheduler(telemetry, spare=False, policy=settings.policy(),
                                      default_keep_alive_s=settings.keep_alive_s))


def load_settings():  # type: ignore[no-untyped-def]  # -> core.settings.Settings
    """The user's settings file, or the defaults when there is none; a bad file is one line."""
    from gputui.core.settings import SettingsError, load_settings_file
    from gputui.errors import UserError
    from gputui.paths import settings_path

    try:
        return load_settings_file(settings_path())
    except SettingsError as e:
        raise UserError(str(e)) from None


async def attach(demo: bool) -> Any:
    """The user's server (started in the background if none runs), as a client."""
    from gputui.api.client import CommandRefused
    from gputui.errors import UserError
    from gputui.remote.lifecycle import connect_or_start

    try:
        client, _started = await connect_or_start(demo)
    except CommandRefused as e:
        raise UserError(str(e)) from None
    return client


def keep_alive(entry: Any, args: argparse.Namespace) -> Any:
    """The profile's request, with --keep-alive if given."""
    from dataclasses import replace

    return replace(entry, keep_alive_s=args.keep_alive) if getattr(args, "keep_alive", False) is not False else entry


def duration_arg(raw: str) -> float | None:
    from gputui.core.requests import parse_duration

    try:
        return parse_duration(raw)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def setting_arg(key: str) -> Callable[[str], int | float]:
    """An argparse type that checks a generation setting as profiles and /set do."""
    def parse(raw: str) -> int | float:
        from gputui.core import generation

        try:
            return generation.parse(key, raw)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse
