"""`gputui` with no subcommand: the dashboard, attached to the user's server (started in the
background if none runs), or monitor-only with GPU actions off when this machine cannot read its
GPUs and no server of the user's can."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from gputui.api.client import CommandRefused
from gputui.core.text import visible
from gputui.errors import UserError


def dashboard_main(args: argparse.Namespace) -> int:
    for stream in ("stdout", "stderr"):  # Textual would write escape codes into the pipe or file
        if not getattr(sys, stream).isatty():
            raise UserError(f"the dashboard needs a terminal ({stream} is not one); "
                            "for a listing a script can read, run `gputui status` or `gputui status --json`")
    from gputui.cli.common import load_settings

    settings = load_settings()
    args.theme = settings.theme
    if args.interval is None:
        args.interval = settings.refresh_s
    from gputui.hardware import TelemetryUnavailable, open_telemetry
    from gputui.tui.launch import run_dashboard

    try:
        telemetry = open_telemetry(demo=args.demo)
        gpu_actions_off = None
    except TelemetryUnavailable as e:  # open anyway: explain, with GPU actions off
        from gputui.hardware.unavailable import UnavailableTelemetry

        telemetry, gpu_actions_off = UnavailableTelemetry(str(e)), str(e)

    if args.profile:
        from gputui.cli.common import load_profile_or_explain

        load_profile_or_explain(args.profile)  # a bad profile is one line here, before the screen opens
    try:
        if gpu_actions_off is not None and _server_running(args.demo):  # show the server's GPUs (a Ray cluster's)
            return attach_dashboard(None, args)
        if gpu_actions_off is not None:  # nothing to schedule on: show and explain
            run_dashboard(telemetry, interval=args.interval, client=None,
                          lock_note=f"GPU actions are off: {gpu_actions_off}", startup_profile=None, theme=args.theme)
            return 0
        return attach_dashboard(telemetry, args)  # the models live in the user's server
    finally:
        telemetry.close()


def _server_running(demo: bool) -> bool:
    """A server of this user's answers (so a dashboard without NVML here can show its GPUs)."""
    import asyncio

    async def ask() -> bool:
        from gputui.remote.lifecycle import find

        try:
            client = await find(demo, timeout=5.0)
        except Exception:  # noqa: BLE001 - no usable server: the monitor-only dashboard says why
            return False
        if client is None:
            return False
        await client.close()
        return True

    return asyncio.run(ask())


def attach_dashboard(telemetry: Any, args: argparse.Namespace) -> int:
    return asyncio.run(_attach(telemetry, args))


async def _attach(telemetry: Any, args: argparse.Namespace) -> int:
    from gputui.remote.lifecycle import connect_or_start
    from gputui.tui.launch import run_dashboard_async

    print("gputui: attaching to your server (starting it if none runs)...", file=sys.stderr, flush=True)
    from gputui.remote.lifecycle import find
    from gputui.remote.reconnecting import ReconnectingClient

    try:
        first, started = await connect_or_start(args.demo)
    except CommandRefused as e:
        raise UserError(str(e)) from None
    startup = args.profile or ("demo" if args.demo and not args.no_profile and not first.models() else None)
    client = ReconnectingClient(first, lambda: find(args.demo))  # comes back when the server does
    if args.demo or telemetry is None or first.server.get("telemetry") not in (None, "nvml"):
        # the GPUs that matter are the server's: simulated ones its workers book memory on, a Ray
        # cluster's, or all of them when this process cannot read NVML itself
        from gputui.remote.client import ServerTelemetry

        telemetry = ServerTelemetry(client)
    try:
        await run_dashboard_async(telemetry, interval=args.interval, client=client, startup_profile=startup,
                                  server_note=None if not started else "started your gputui server in the background",
                                  theme=args.theme)
        serving = [v.name for v in client.models() if v.ready]
        if serving and client.gone is None:  # say what keeps running, and how to end it
            flag = " --demo" if args.demo else ""
            print(visible(f"gputui: {', '.join(serving)} keep serving in your gputui server (pid "
                          f"{client.server.get('pid')}): `gputui ps{flag}` lists them, `gputui stop{flag}` ends them",
                          one_line=True), file=sys.stderr)
    finally:
        await client.close()
    return 0
