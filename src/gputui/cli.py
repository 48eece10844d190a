"""Command-line entry points: `gputui` (dashboard) and its subcommands.

Imports are lazy so that `gputui status` never loads Textual and nothing here loads torch.
Errors a user can fix are printed as one line on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from gputui.errors import UserError


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", action="store_true", help="use a SIMULATED server with tiny models (no GPU needed)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gputui", description="GPU dashboard and model scheduler for shared servers")
    _add_common(parser)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between refreshes (default 0.5)")
    parser.add_argument("--no-profile", action="store_true", help="with --demo: do not apply profiles/demo.toml")
    parser.add_argument("--profile", metavar="NAME", help="apply this placement profile when the dashboard starts")
    sub = parser.add_subparsers(dest="command")

    st = sub.add_parser("status", help="print every GPU once")
    _add_common(st)
    st.add_argument("--json", action="store_true", help="JSON (schema in README.md)")

    from gputui import cli_commands, cli_server

    cli_commands.add_subcommands(sub, _add_common)
    cli_server.add_subcommands(sub, _add_common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command is None:
            return _dashboard(args)
        if args.command == "status":
            return _status(args)
        from gputui import cli_commands, cli_server

        served = cli_server.dispatch(args)
        return served if served is not None else cli_commands.dispatch(args)
    except UserError as e:
        from gputui.core.text import visible

        print(f"gputui: {visible(e, one_line=True)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        from gputui.paths import take_notes

        for note in take_notes():  # files of ours that other users could read, now private
            print(f"gputui: {note}", file=sys.stderr)


def _status(args: argparse.Namespace) -> int:
    from gputui.cli_common import open_telemetry_or_explain
    from gputui.core.snapshot import snapshot_to_json
    from gputui.core.status_table import status_text

    telemetry = open_telemetry_or_explain(args.demo)
    snap = telemetry.snapshot()
    if args.json:
        print(json.dumps(snapshot_to_json(snap), indent=2))
    else:
        print(status_text(snap))
    telemetry.close()
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise UserError("--interval must be a positive number of seconds, e.g. --interval 0.5")
    from gputui.hardware import TelemetryUnavailable, open_telemetry
    from gputui.tui.launch import run_dashboard

    try:
        telemetry = open_telemetry(demo=args.demo)
        gpu_actions_off = None
    except TelemetryUnavailable as e:  # open anyway: explain, with GPU actions off
        from gputui.hardware.unavailable import UnavailableTelemetry

        telemetry, gpu_actions_off = UnavailableTelemetry(str(e)), str(e)

    if args.profile:
        from gputui.cli_common import load_profile_or_explain

        load_profile_or_explain(args.profile)  # a bad profile is one line here, before the screen opens
    try:
        if gpu_actions_off is not None:  # nothing to schedule on: show and explain
            run_dashboard(telemetry, interval=args.interval, client=None,
                          lock_note=f"GPU actions are off: {gpu_actions_off}", startup_profile=None)
            return 0
        from gputui.cli_server import attach_dashboard

        return attach_dashboard(telemetry, args)  # the models live in the user's server
    finally:
        telemetry.close()
