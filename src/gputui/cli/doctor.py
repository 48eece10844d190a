"""`gputui doctor [--explain TEXT] [--json] [--bundle FILE]`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SYMBOL = {"ok": "✓", "info": "·", "warning": "!", "error": "✖"}


def add_parser(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    doc = sub.add_parser("doctor", help="check this machine for CUDA/cuBLAS trouble and explain errors")
    add_common(doc)
    doc.add_argument("--explain", metavar="ERROR_TEXT", help="explain an error message against the live GPU state")
    doc.add_argument("--json", action="store_true")
    doc.add_argument("--bundle", metavar="FILE", help="write a diagnostic archive for a bug report")
    doc.add_argument("--no-subprocess", action="store_true", help="skip the spawned CUDA check")


def doctor_main(args: argparse.Namespace) -> int:
    from gputui.core.snapshot import ServerSnapshot
    from gputui.core.text import visible
    from gputui.doctor.checks import run_checks
    from gputui.doctor.explain import explain
    from gputui.hardware import TelemetryUnavailable, open_telemetry

    try:
        telemetry = open_telemetry(demo=args.demo)
        snap = telemetry.snapshot()
    except TelemetryUnavailable as e:
        import time

        snap = ServerSnapshot(time.time(), "nvml", error=str(e))
    if args.explain is not None:
        text = sys.stdin.read() if args.explain == "-" else args.explain
        ex = explain(text, snap)
        print(json.dumps(ex.to_json(), indent=2) if args.json else visible(ex.text()))
        return 0 if ex.entries else 1
    findings = run_checks(snap, spawn_cuda_check=not args.no_subprocess)
    if args.bundle:
        from gputui.doctor.bundle import write_bundle
        from gputui.errors import UserError
        from gputui.paths import timeline_path

        try:
            path = write_bundle(Path(args.bundle).expanduser(), snap, findings, timeline_path())
        except OSError as e:
            raise UserError(f"could not write the bundle: {e}") from None
        print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps([f.to_json() for f in findings], indent=2))
    else:
        if snap.simulated:
            print("SIMULATED server (--demo)")
        for f in findings:
            print(visible(f"{SYMBOL.get(f.severity, '?')} {f.title}: {f.evidence}", one_line=True))
            if f.fix:
                print(visible(f"    fix: {f.fix}", one_line=True))
    return 1 if any(f.severity == "error" for f in findings) else 0
