"""Subcommands beyond `status`: profiles, run, chat, doctor. Registered here so cli.py stays small."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

from gputui.cli_common import load_profile_or_explain, local_client, open_telemetry_or_explain


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
    run.add_argument("--keep-alive", type=_duration, default=False, metavar="DUR",
                     help="unload each model after this long unused: 30s, 10m, 2h, forever (default: the profile's)")
    run.add_argument("--save-as", metavar="FILE", help="after applying, save the placement as a profile")
    run.add_argument("--compare", action="store_true", help="after applying, compare the profile with the live state")

    chat = sub.add_parser("chat", help="line-based chat with one model (pipes and scripts)")
    add_common(chat)
    chat.add_argument("model", help="model name in the profile (with --demo: chatglm3 or blip2)")
    chat.add_argument("--profile", help="profile that defines the model (default with --demo: demo)")
    chat.add_argument("--max-new-tokens", type=_setting("max_new_tokens"), metavar="N")
    chat.add_argument("--temperature", type=_setting("temperature"), metavar="T")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--keep-alive", type=_duration, default=False, metavar="DUR",
                      help="if it loads the model: unload after this long unused (30s, 10m, 2h, forever)")

    cfg = sub.add_parser("config", help="print the settings file's path and the values in effect")
    add_common(cfg)
    cfg.add_argument("--json", action="store_true")
    cfg.add_argument("--init", action="store_true", help="write a settings file with every key, commented, if none exists")

    doc = sub.add_parser("doctor", help="check this machine for CUDA/cuBLAS trouble and explain errors")
    add_common(doc)
    doc.add_argument("--explain", metavar="ERROR_TEXT", help="explain an error message against the live GPU state")
    doc.add_argument("--json", action="store_true")
    doc.add_argument("--bundle", metavar="FILE", help="write a diagnostic archive for a bug report")
    doc.add_argument("--no-subprocess", action="store_true", help="skip the spawned CUDA check")


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


def stdin_lines() -> asyncio.Queue[bytes]:
    """Lines of stdin, read by a daemon thread (b"" at the end). Not the loop's executor: a
    thread blocked in readline() there keeps asyncio.run from returning, so Ctrl-C at the
    prompt needed a second Ctrl-C. And os.read on the descriptor, not sys.stdin's buffered
    reader: a daemon thread blocked inside that reader holds its lock when Ctrl-C ends the
    interpreter, which then aborts ("Fatal Python error: _enter_buffered_busy", exit 134)."""
    import threading

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    fd = sys.stdin.fileno()

    def put(raw: bytes) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: we are exiting
            loop.call_soon_threadsafe(queue.put_nowait, raw)

    def read() -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                if pending:
                    put(pending)
                put(b"")
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                put(line + b"\n")

    threading.Thread(target=read, name="gputui-stdin", daemon=True).start()
    return queue


def _duration(raw: str) -> float | None:
    from gputui.core.requests import parse_duration

    try:
        return parse_duration(raw)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _setting(key: str) -> Callable[[str], int | float]:
    """An argparse type that checks a generation setting as profiles and /set do."""
    def parse(raw: str) -> int | float:
        from gputui.core import generation

        try:
            return generation.parse(key, raw)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "profiles":
        return _profiles(args)
    if args.command == "run":
        return asyncio.run(_run(args))
    if args.command == "chat":
        return asyncio.run(_chat(args))
    if args.command == "config":
        return _config(args)
    if args.command == "doctor":
        from gputui.doctor.cli import doctor_main

        return doctor_main(args)
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

    from gputui.cli_common import load_settings
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


# -- chat ---------------------------------------------------------------------------------


def _tell(event: str, text: str) -> None:
    """A line for the person at the terminal (stderr: stdout carries only the model's words)."""
    from gputui.core.text import visible

    print(f"# {event}: {visible(text)}" if event else f"# {visible(text)}", file=sys.stderr, flush=True)


async def _chat_line(text: str, session: Any, client: Any, profile: Any, args: argparse.Namespace) -> bool:
    """One line of `gputui chat`: a slash command as in the TUI (chat/commands.py), or a message.
    False when it was refused or its reply ended in an error."""
    from gputui.chat.commands import (
        DISCUSS_IMAGE,
        LOCAL_VERBS,
        CommandRefused,
        parse_line,
        run_local,
    )
    from gputui.chat.session import stats_line
    from gputui.core.text import visible

    try:
        line = parse_line(text, session.caps.takes_images, session.model)
    except CommandRefused as e:
        _tell("error", str(e))
        return False
    if line.verb in LOCAL_VERBS:
        _tell("", run_local(session, line))
        return True
    question, image = line.text, line.image
    if line.verb == "describe":
        describer = await _describer(client, profile, args)
        if describer is None:
            return False
        _tell("", f"asking {describer.model} about {line.image} ...")
        async for ev in session.describe(describer, str(line.image), line.text):
            if ev.event in ("error", "notice"):
                _tell("error" if ev.event == "error" else "", ev.text)
                if ev.event == "error":
                    return False
        question, image = line.text or DISCUSS_IMAGE, None  # the caption is context now; ChatGLM3 reads no image
    ok = True
    async for ev in session.send(question, image=image):
        if ev.event == "text":
            sys.stdout.write(visible(ev.text))
            sys.stdout.flush()
        elif ev.event == "done":
            sys.stdout.write("\n")
            sys.stdout.flush()
            _tell("", stats_line(ev.stats))
        elif ev.event in ("error", "notice"):
            _tell(ev.event, ev.text)
            if ev.event == "error":
                ok = False
                sys.stdout.write("\n")
    return ok


async def _describer(client: Any, profile: Any, args: argparse.Namespace) -> Any:
    """A chat with a ready model that reads images (BLIP2), for /describe; loaded from the profile
    when it has one and it is not loaded yet."""
    from gputui.api.client import CommandRefused
    from gputui.chat.session import ChatSession
    from gputui.core.kinds import kind_named

    ready = [v for v in client.models() if v.ready and kind_named(v.kind).takes_images]
    if not ready:
        entry = next((m for m in (profile.models if profile is not None else ()) if kind_named(m.kind).takes_images), None)
        if entry is None:
            where = f"profile {profile.name} has none" if profile is not None else "no --profile names one"
            _tell("error", f"no model that describes images (BLIP2) is ready, and {where}")
            return None
        _tell("", f"loading {entry.name} for /describe ...")
        try:
            view = await client.load(keep_alive(entry, args))
        except CommandRefused as e:
            _tell("error", f"{entry.name} did not load: {e}")
            return None
        if not view.ready:
            _tell("error", f"{entry.name} did not load: {view.error}")
            return None
        ready = [view]
    return ChatSession(client, ready[0].name, ready[0].kind, journaled=False)


def _model_by_name(client: Any, profile: Any, name: str) -> tuple[Any, Any]:
    """(the request to load `name` with, the server's view of it or None): a model the server
    holds, in any state, by its own request (as `ollama run NAME` talks to what is loaded);
    else the profile's entry. One line naming what there is otherwise."""
    from gputui.errors import UserError

    view = client.model(name)
    if view is not None:
        entry = view.request
        if profile is not None:  # a profile's own settings for it (generation, keep-alive) win
            entry = next((m for m in profile.models if m.name == name), entry)
        return entry, view
    entry = next((m for m in profile.models if m.name == name), None) if profile is not None else None
    if entry is not None:
        return entry, None
    held = ", ".join(v.name for v in client.models()) or "none"
    where = f"profile {profile.name} has {', '.join(m.name for m in profile.models)}" if profile is not None \
        else "name a profile that defines it: --profile NAME"
    raise UserError(f"no model {name!r} in your gputui server (it holds: {held}); {where}")


async def _chat(args: argparse.Namespace) -> int:
    from gputui.api.client import CommandRefused
    from gputui.chat.sanitize import decode_input
    from gputui.chat.session import ChatSession
    from gputui.core.text import visible
    from gputui.errors import UserError

    profile = load_profile_or_explain(args.profile or ("demo" if args.demo else ""), check_paths=True) \
        if (args.profile or args.demo) else None
    client = await attach(args.demo)
    try:
        entry, view = _model_by_name(client, profile, args.model)
        if view is None or not view.ready:  # loaded by the server now; a ready one starts no worker
            if view is not None:
                _tell("", f"{entry.name} was {view.state.value}: loading it again ...")
            try:
                view = await client.load(keep_alive(entry, args))
            except CommandRefused as e:
                raise UserError(f"{entry.name} did not load: {e}") from None
        if not view.ready:
            raise UserError(f"{entry.name} did not load: {view.error}")
        params = dict(entry.generation)
        if args.max_new_tokens is not None:
            params["max_new_tokens"] = args.max_new_tokens
        if args.temperature is not None:
            params["temperature"] = args.temperature
        system = args.system or params.pop("system_prompt", None)
        session = ChatSession(client, entry.name, entry.kind, system, params)
        where = "SIMULATED GPU" if args.demo else f"GPU {view.gpu_label}"
        print(visible(f"# {entry.name} ready ({where}); conversation saved to {session.journal_path}", one_line=True),
              file=sys.stderr, flush=True)
        lines, failed = stdin_lines(), 0
        while True:
            raw = await lines.get()
            if not raw:
                return 1 if failed else 0  # a script learns that some line got no answer
            line = decode_input(raw).rstrip("\n")
            if line.strip() and not await _chat_line(line, session, client, profile, args):
                failed += 1
    finally:
        await client.close()
