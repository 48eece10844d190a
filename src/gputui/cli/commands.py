"""Subcommands beyond `status`, the server's, chat and doctor: profiles, run, config."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from gputui.cli.common import (
    attach,
    duration_arg,
    keep_alive,
    load_profile_or_explain,
    local_client,
    open_telemetry_or_explain,
)


def add_subcommands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    pr = sub.add_parser("profiles", help="list shipped and saved placement profiles")
    add_common(pr)
    pr.add_argument("--json", action="store_true")

    run = sub.add_parser("run", help="apply a placement profile (load its models in order)")
    add_common(run)
    run.add_argument("profile", help="a profile name from `gputui profiles`, or a .toml file")
    run.add_argument("--dry-run", action="store_true", help="print the plan and whether it fits; load nothing")
    run.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    run.add_argument("--exit", action="store_true", help="unload what it loaded once applied (default: they stay in the server)")
    run.add_argument("--keep-alive", type=duration_arg, default=False, metavar="DUR",
                     help="unload each model after this long unused: 30s, 10m, 2h, forever (default: the profile's)")
    run.add_argument("--save-as", metavar="FILE", help="after applying, save the placement as a profile")
    run.add_argument("--compare", action="store_true", help="after applying, compare the profile with the live state")

    cfg = sub.add_parser("config", help="print the settings file's path and the values in effect")
    add_common(cfg)
    cfg.add_argument("--json", action="store_true")
    cfg.add_argument("--init", action="store_true", help="write a settings file with every key, commented, if none exists")



def dispatch(args: argparse.Namespace) -> int:
    if args.command == "profiles":
        return _profiles(args)
    if args.command == "run":
        return asyncio.run(_run(args))
    if args.command == "config":
        return _config(args)
    raise SystemExit(f"unknown command {args.command}")


# -- profiles -----------------------------------------------------------------------------


def _profiles(args: argparse.Namespace) -> int:
    import json

    from gputui.core.profiles import ProfileError, load_profile
    from gputui.core.text import visible
    from gputui.paths import shipped_profiles_dir, user_profiles_dir

    found: list[dict[str, Any]] = []
    for label, d in (("saved", user_profiles_dir()), ("shipped", shipped_profiles_dir())):
        files = sorted(d.glob("*.toml")) if d.is_dir() else []
        if not args.json:
            print(f"{label} profiles ({d}):" if files else f"{label} profiles: none in {d}")
        for f in files:
            try:
                p = load_profile(f, check_paths=False)
                found.append({"name": p.name, "source": label, "path": str(f), "error": None,
                              "models": [m.to_json() for m in p.models]})
                line = f"  {p.name:<28} " + ", ".join(f"{m.name} ({m.kind}) on {'/'.join(m.gpus)}" for m in p.models)
            except ProfileError as e:
                found.append({"name": f.stem, "source": label, "path": str(f), "error": str(e), "models": []})
                line = f"  {f.stem:<28} INVALID: {e}"
            if not args.json:
                print(visible(line, one_line=True))
    if args.json:
        print(json.dumps({"profiles": found}, indent=2))
    return 0


# -- config -------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> int:
    import json

    from gputui.cli.common import load_settings
    from gputui.core import settings as core_settings
    from gputui.paths import settings_path

    path = settings_path()
    if args.init:
        if path.exists():
            from gputui.errors import UserError

            raise UserError(f"{path} exists already; edit it (it is TOML), or move it away first")
        from gputui.core.atomic import atomic_write
        from gputui.paths import private_dir

        private_dir(path.parent)
        atomic_write(path, core_settings.template().encode())
        print(f"wrote {path}")
    settings = load_settings()
    if args.json:
        print(json.dumps({"path": str(path), "exists": path.exists(), "settings": settings.to_json()}, indent=2))
        return 0
    print(f"# {path}" + ("" if path.exists() else " (none yet: these are the defaults; `gputui config --init` writes one)"))
    print("# a running server read it when it started: `gputui stop`, then start gputui, to apply a change")
    for line in settings.to_toml_lines():
        print(line)
    return 0


# -- run ----------------------------------------------------------------------------------


async def _run(args: argparse.Namespace) -> int:
    from gputui.core.profiles import ProfileError, save_target
    from gputui.core.text import visible
    from gputui.errors import UserError
    from gputui.paths import user_profiles_dir

    if args.json and not args.dry_run:
        raise UserError("--json goes with --dry-run (the plan); `gputui ps --json` lists what is loaded")
    profile = load_profile_or_explain(args.profile)
    if args.save_as:  # a name that cannot be saved is said now, not after loading every model
        try:
            save_target(args.save_as, user_profiles_dir())
        except ProfileError as e:
            raise UserError(str(e)) from None
    if args.keep_alive is not False:
        from dataclasses import replace

        profile = replace(profile, models=tuple(keep_alive(m, args) for m in profile.models))
    telemetry = open_telemetry_or_explain(args.demo)
    if telemetry.backend == "simulated" and not args.json:
        print("SIMULATED server (--demo): tiny models on made-up GPUs", flush=True)
    if args.dry_run:  # a plan needs no server: the running one's, else this process's own
        from gputui.remote.lifecycle import find

        client = await find(args.demo) or local_client(telemetry)
    else:
        client = await attach(args.demo)
    try:
        plan = await client.plan_profile(profile)
        fits = all(line.fits for line in plan)
        if args.json:
            import json

            print(json.dumps({"profile": profile.name, "fits": fits, "simulated": telemetry.backend == "simulated",
                              "plan": [line.to_json() for line in plan]}, indent=2))
            return 0 if fits else 1
        print(f"profile {profile.name}: {len(profile.models)} model(s)")
        for line in plan:
            print(visible(f"  {'OK  ' if line.fits else 'NO  '} {line.model}: {line.message}", one_line=True))
        print("verdict: the whole profile fits" if fits else "verdict: the profile does not fit as it stands")
        if args.dry_run:
            return 0 if fits else 1
        return await _apply(args, client, profile, telemetry)
    finally:
        await client.close()
        telemetry.close()


async def _apply(args: argparse.Namespace, client: Any, profile: Any, telemetry: Any) -> int:
    """Apply, report, compare, save (`gputui run` after its dry run); the models stay in the server."""
    from gputui.api.client import CommandRefused
    from gputui.core.profiles import save_profile, save_target
    from gputui.core.text import visible
    from gputui.errors import UserError
    from gputui.paths import user_profiles_dir
    from gputui.scheduler.profiles_runner import compare_profile

    steps = await client.apply_profile(profile)
    for st in steps:
        print(visible(f"  {st.model}: {st.outcome}: {st.message}", one_line=True), flush=True)
    ok = all(st.outcome in ("loaded", "kept") for st in steps)
    for v in client.models():
        if v.ready:
            print(f"  {v.name}: on GPU {v.gpu_label}; predicted {(v.predicted_bytes or 0) >> 20} MiB, "
                  f"measured {(v.measured_bytes or 0) >> 20} MiB")
    if args.compare:
        c = compare_profile(profile, client.models(), await asyncio.to_thread(telemetry.snapshot))
        print(f"compare: ok {list(c.ok)} missing {list(c.missing)} misplaced {list(c.misplaced)} extra {list(c.extra)}")
    if args.save_as and ok:
        stem, target = save_target(args.save_as, user_profiles_dir())
        try:
            save_profile(await client.current_profile(stem), target)
        except (OSError, CommandRefused) as e:
            raise UserError(f"could not save the profile to {target}: {getattr(e, 'strerror', None) or e}") from None
        print(f"saved the placement to {target}")
    if args.exit:  # a check that leaves nothing behind
        for st in steps:
            if st.outcome == "loaded":
                r = await client.unload(st.model)
                print(f"  {st.model}: unloaded, {(r.returned_bytes or 0) >> 20} MiB back")
    elif ok:
        server = getattr(client, "server", {}) or {}
        print(f"serving in your gputui server (pid {server.get('pid')}): `gputui ps` lists the models, "
              "`gputui stop` ends them", flush=True)
    return 0 if ok else 1
