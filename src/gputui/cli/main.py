"""Command-line entry points: `gputui` (dashboard) and its subcommands.

Imports are lazy so that `gputui status` never loads Textual and nothing here loads torch.
Errors a user can fix are printed as one line on stderr with exit code 2, never a traceback.
Exit codes (README "Exit codes"): 0 done, 1 ran but the answer is no (a plan that does not fit,
a model that failed), 2 bad input or nothing to work on, 130 Ctrl-C, 141 the reader of our
output went away (`| head`), as a C tool killed by SIGPIPE would report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence

from gputui.errors import UserError

DEMO_HELP = "use a SIMULATED server with tiny models (no GPU needed)"


def _add_common(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand's own default must not overwrite `gputui --demo status`'s flag
    # (argparse copies a subparser's defaults over the parent's values).
    p.add_argument("--demo", action="store_true", default=argparse.SUPPRESS, help=DEMO_HELP)


class _Version(argparse.Action):
    """`gputui --version`: ours, and the running server's when one runs (after an upgrade the
    old server runs on until stopped: said, with what to do, as Ollama warns)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                  option_string: str | None = None) -> None:
        from gputui import __version__

        print(f"gputui {__version__}")
        for line in _server_versions(__version__):
            print(line)
        parser.exit(0)


def _server_versions(ours: str) -> list[str]:
    import asyncio

    async def ask(demo: bool) -> str | None:
        from gputui.remote.client import ServerError
        from gputui.remote.lifecycle import find

        try:
            client = await find(demo, timeout=2.0)
        except ServerError as e:
            return f"{'demo ' if demo else ''}server: {e}"
        except (OSError, ValueError):
            return None
        if client is None:
            return None
        hello = client.server
        await client.close()
        theirs = str(hello.get("version"))
        flag = " --demo" if demo else ""
        line = f"{'demo ' if demo else ''}server: gputui {theirs} (pid {hello.get('pid')})"
        if theirs != ours:
            line += f"; it differs from this gputui: `gputui stop{flag}`, then start it again, to run {ours}"
        return line

    async def both() -> list[str]:
        return [x for x in (await ask(False), await ask(True)) if x]

    try:
        return asyncio.run(both())
    except Exception:  # noqa: BLE001 - --version never fails for want of a server
        return []


def interval_seconds(raw: str) -> float:
    """--interval, checked as the settings' refresh is (nan once spun a core)."""
    from gputui.core.settings import refresh_seconds

    try:
        value = float(raw)
    except ValueError:
        value = math.nan  # refused below, with the range
    try:
        return refresh_seconds(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a refresh interval: {e}") from None


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(prog="gputui", description="GPU dashboard and model scheduler for shared servers",
                                     epilog="exit codes: 0 done, 1 the answer is no (does not fit, failed), "
                                            "2 bad input or no GPU, 130 interrupted, 141 output closed")
    parser.add_argument("--version", action=_Version, nargs=0, help="this gputui's version, and the running server's")
    parser.add_argument("--demo", action="store_true", default=False, help=DEMO_HELP)
    parser.add_argument("--interval", type=interval_seconds, default=None, metavar="SECONDS",
                        help="seconds between refreshes (default: the settings file's, else 0.5)")
    parser.add_argument("--no-profile", action="store_true", help="with --demo: do not apply profiles/demo.toml")
    parser.add_argument("--profile", metavar="NAME", help="apply this placement profile when the dashboard starts")
    sub = parser.add_subparsers(dest="command")

    st = sub.add_parser("status", help="print every GPU once")
    _add_common(st)
    st.add_argument("--json", action="store_true", help="JSON (schema in README.md)")

    from gputui.cli import chat as cli_chat
    from gputui.cli import commands as cli_commands
    from gputui.cli import doctor as cli_doctor
    from gputui.cli import server as cli_server

    cli_commands.add_subcommands(sub, _add_common)
    cli_chat.add_parser(sub, _add_common)
    cli_doctor.add_parser(sub, _add_common)
    cli_server.add_subcommands(sub, _add_common)
    _add_completion(parser)
    return parser


def _add_completion(parser: argparse.ArgumentParser) -> None:
    """`gputui --print-completion bash|zsh|tcsh`, generated from this parser by shtab (a small
    library made for exactly this), so completion can never drift from the real flags."""
    try:
        import shtab
    except ImportError:  # completion is a convenience; the CLI works without it
        return
    shtab.add_argument_to(parser, ["--print-completion"])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except BrokenPipeError:  # `gputui status --json | head`: the reader is done, and so are we
        _silence_stdout()
        return 141


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again (the
    recipe in Python's signal docs)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _main(args: argparse.Namespace) -> int:
    try:
        if args.command is None:
            from gputui.cli.dashboard import dashboard_main

            return dashboard_main(args)
        if args.command == "status":
            return _status(args)
        if args.command == "chat":
            import asyncio

            from gputui.cli.chat import chat_main

            return asyncio.run(chat_main(args))
        if args.command == "doctor":
            from gputui.cli.doctor import doctor_main

            return doctor_main(args)
        from gputui.cli import commands as cli_commands
        from gputui.cli import server as cli_server

        served = cli_server.dispatch(args)
        return served if served is not None else cli_commands.dispatch(args)
    except UserError as e:
        from gputui.core.text import visible

        print(f"gputui: {visible(e, one_line=True)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a refusal from the server that no command turned into a UserError
        from gputui.api.client import CommandRefused
        from gputui.core.text import visible
        from gputui.remote.client import ServerError

        if not isinstance(e, CommandRefused):
            raise
        print(f"gputui: {visible(e, one_line=True)}", file=sys.stderr)
        return 2 if isinstance(e, ServerError) else 1
    finally:
        from gputui.paths import take_notes

        for note in take_notes():  # files of ours that other users could read, now private
            print(f"gputui: {note}", file=sys.stderr)


def _status(args: argparse.Namespace) -> int:
    from gputui.cli.common import open_telemetry_or_explain
    from gputui.core.snapshot import STATUS_SCHEMA_VERSION, snapshot_to_json
    from gputui.core.status_table import status_text

    try:
        telemetry = open_telemetry_or_explain(args.demo)
    except UserError as e:
        if args.json:  # a script reading our JSON gets JSON, even when there is nothing to read
            print(json.dumps({"schema_version": STATUS_SCHEMA_VERSION, "error": str(e), "gpus": []}, indent=2))
        raise
    snap = telemetry.snapshot()
    if args.json:
        print(json.dumps(snapshot_to_json(snap), indent=2))
    else:
        print(status_text(snap))
    telemetry.close()
    return 0
