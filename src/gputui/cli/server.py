"""`gputui serve`, `gputui ps`, `gputui stop`, and the dashboard attached to the server.

The server is the scheduler, headless, serving its client on a Unix socket; everything else
attaches to it. `gputui` starts one in the background when none runs, so models outlive the
terminal; `gputui stop` ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from typing import Any

from gputui.api.client import CommandRefused
from gputui.core.text import visible
from gputui.errors import UserError

PS_SCHEMA_VERSION = 1
PS_HIDE_AFTER_S = 600  # `ps` leaves out models gone longer than this (--all shows them)


def add_subcommands(sub: Any, add_common: Any) -> None:
    serve = sub.add_parser("serve", help="run the scheduler headless for this user (the dashboard and chat attach)")
    add_common(serve)
    serve.add_argument("--profile", metavar="NAME", help="apply this profile once the server is up")
    serve.add_argument("--ray", metavar="ADDRESS",
                       help="place workers on an existing Ray cluster (auto: the local cluster's address)")
    serve.add_argument("--api", action="store_true",
                       help="also serve an OpenAI-compatible API on a private Unix socket (`gputui api` says how to "
                            "reach it)")
    serve.add_argument("--api-listen", metavar="HOST:PORT",
                       help="with --api: also listen on TCP (loopback), with a bearer token (`gputui api` says where)")
    serve.add_argument("--api-listen-anywhere", action="store_true",
                       help="allow --api-listen on an address other machines can reach")
    serve.add_argument("--background", action="store_true",
                       help="log to the state folder only, not this terminal (`gputui` starts its server so; "
                            "use it with &)")
    api = sub.add_parser("api", help="how to reach the server's OpenAI-compatible API (serve --api)")
    add_common(api)
    api.add_argument("--json", action="store_true")
    metrics = sub.add_parser("metrics", help="Prometheus metrics, once, to stdout (node_exporter's textfile "
                                             "collector): the server's, else this machine's GPUs")
    add_common(metrics)
    ps = sub.add_parser("ps", help="the models the server holds")
    add_common(ps)
    ps.add_argument("--json", action="store_true")
    ps.add_argument("--all", action="store_true", help=f"also models unloaded or failed over {PS_HIDE_AFTER_S // 60} minutes ago")
    stop = sub.add_parser("stop", help="unload a model, or end the server and every model")
    add_common(stop)
    stop.add_argument("model", nargs="?", help="the model to unload (default: all, and the server ends)")
    stop.add_argument("--force", action="store_true",
                      help="end a server that does not answer or speaks another version (by the pid in its lock)")


def dispatch(args: argparse.Namespace) -> int | None:
    if args.command == "serve":
        return asyncio.run(serve(args))
    if args.command == "ps":
        return asyncio.run(ps(args))
    if args.command == "api":
        return asyncio.run(api_info(args))
    if args.command == "metrics":
        return asyncio.run(metrics_once(args))
    if args.command == "stop":
        return asyncio.run(stop(args))
    return None


# -- serve --------------------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> int:
    import logging

    from gputui import __version__
    from gputui.api.views import event_line
    from gputui.cli.common import load_profile_or_explain, load_settings, open_telemetry_or_explain
    from gputui.core.kinds import kind_names
    from gputui.paths import UnsafePath
    from gputui.remote import logs
    from gputui.remote.lifecycle import lock_path, log_path, socket_path
    from gputui.remote.server import Server
    from gputui.scheduler.client import LocalClient
    from gputui.scheduler.factory import make_scheduler
    from gputui.scheduler.lock import SchedulerLocked, UserLock

    profile = load_profile_or_explain(args.profile) if args.profile else None
    log = logs.setup(log_path(args.demo), echo=not args.background)
    try:
        path = socket_path(args.demo)
    except CommandRefused as e:
        raise UserError(str(e)) from None
    lock = UserLock(lock_path(args.demo))
    try:
        lock.acquire()
    except SchedulerLocked as e:
        if e.holder == "?":
            raise UserError(str(e)) from None
        raise UserError(f"a gputui server is already running for this user (pid {e.holder}): attach with "
                        f"`gputui{' --demo' if args.demo else ''}`, or end it with `gputui stop"
                        f"{' --demo' if args.demo else ''}`") from None
    except UnsafePath as e:
        raise UserError(str(e)) from None
    telemetry, launcher = _cluster(args) if args.ray else (open_telemetry_or_explain(args.demo), None)
    if path.exists():  # we hold the lock, so no server owns it: a stale one
        path.unlink()
        log.info("removed a stale socket at %s", path)
    warm = {m.kind for m in profile.models} if profile else set(kind_names())
    settings = load_settings()  # read once, at the server's start (`gputui config` says so)
    client = LocalClient(make_scheduler(telemetry, spare=not args.demo, launcher=launcher, policy=settings.policy(),
                                        default_keep_alive_s=settings.keep_alive_s,
                                        evict_idle=settings.evict == "idle"), warm=sorted(warm))
    stopping = asyncio.Event()
    server = Server(client, telemetry=telemetry, demo=args.demo, on_shutdown=stopping.set, version=__version__)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # losing a terminal never unloads a model

    async def log_events() -> None:
        async for ev in client.events(client.last_seq):
            if ev.type == "timeline":
                bad = ev.data.get("event") in ("failed", "crashed", "log_stopped", "move_failed")
                log.log(logging.WARNING if bad else logging.INFO, "%s", event_line(ev.data, with_time=False))

    logger: asyncio.Task[None] | None = None
    api = None
    try:
        await client.start()
        if args.api:  # before the control socket: a client that finds the server finds its API too
            api = await _start_api(args, client, telemetry, log)
            server.api = {"socket": str(api.path), "tcp": api.tcp_bound,
                          "token_file": str(_token_file(args.demo)) if api.tcp_bound else None}
        await server.listen(path)
        logger = asyncio.create_task(log_events())
        log.info("gputui %s server (pid %d) listening on %s%s", __version__, os.getpid(), path,
                 " (SIMULATED --demo server)" if args.demo else "")
        if api is not None:
            log.info("OpenAI-compatible API on %s%s (`gputui api%s` says how to reach it)", api.path,
                     f" and http://{api.tcp_bound} (bearer token)" if api.tcp_bound else "", " --demo" if args.demo else "")
        if profile is not None:
            for step in await client.apply_profile(profile):
                log.info("%s: %s: %s", step.model, step.outcome, step.message)
        await stopping.wait()
        log.info("stopping: unloading every model")
    finally:
        if api is not None:
            await api.close()
        await server.close()
        await client.close()  # its unloads are logged: the logger still runs
        await asyncio.sleep(0.05)
        if logger is not None:
            logger.cancel()
        path.unlink(missing_ok=True)
        lock.release()
        telemetry.close()
    log.info("stopped")
    return 0


def _token_file(demo: bool) -> Any:
    from gputui.paths import private_dir, state_dir

    return private_dir(state_dir()) / ("demo-api-token" if demo else "api-token")


async def _start_api(args: argparse.Namespace, client: Any, telemetry: Any, log: Any) -> Any:
    from gputui.cli.common import load_profile_or_explain, load_settings
    from gputui.http_api.app import ApiServer
    from gputui.http_api.token import ListenRefused, api_token, listen_address
    from gputui.remote.lifecycle import api_socket_path

    tcp = token = None
    if args.api_listen:
        try:
            tcp = listen_address(args.api_listen, args.api_listen_anywhere)
        except ListenRefused as e:
            raise UserError(str(e)) from None
        token = api_token(_token_file(args.demo))
        if args.api_listen_anywhere:
            log.warning("the API listens on %s:%d, reachable from other machines: the token is all that guards it",
                        *tcp)
    settings = load_settings()
    loadable = _loadable([load_profile_or_explain(name) for name in settings.api_load], log)
    api = ApiServer(client, api_socket_path(args.demo), telemetry, tcp=tcp, token=token,
                    queue_limit=settings.api_queue, loadable=loadable)
    try:
        await api.start()
    except OSError as e:
        raise UserError(f"the API cannot listen: {e.strerror or e}") from None
    return api


def _loadable(profiles: list[Any], log: Any) -> Any:
    """The models the settings' api_load profiles define, as one profile: a name two of them
    use is taken from the first (and said in the log), as a profile's own names are unique."""
    from gputui.core.profiles import Profile

    if not profiles:
        return None
    models: dict[str, Any] = {}
    for p in profiles:
        for m in p.models:
            if m.name in models:
                log.warning("api_load: %s in profile %s is also in an earlier one; the first is used", m.name, p.name)
                continue
            models[m.name] = m
    return Profile("+".join(p.name for p in profiles), tuple(models.values()))


def _cluster(args: argparse.Namespace) -> tuple[Any, Any]:
    """Telemetry and launcher over an existing Ray cluster (--demo: two simulated GPUs a node)."""
    from gputui.cluster import RayMissing, require_ray
    from gputui.cluster.head import DRIVER_ENV

    # never let Ray abort this server (cluster/head.py says why); read when Ray is first imported
    os.environ.update(DRIVER_ENV)
    try:
        ray = require_ray()
    except RayMissing as e:
        raise UserError(str(e)) from None
    from gputui.cluster import address as cluster_address
    from gputui.cluster.launcher import RayLauncher
    from gputui.cluster.telemetry import ClusterTelemetry

    try:  # bounded and checked before Ray is asked (cluster/address.py says why)
        address = cluster_address.resolve(args.ray)
        cluster_address.probe(address)
    except cluster_address.ClusterRefused as e:
        raise UserError(str(e)) from None
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserError(f"cannot reach the Ray cluster at {address}: {e}") from None
    telemetry = ClusterTelemetry(ray, simulated_gpus=2 if args.demo else 0)
    return telemetry, RayLauncher(telemetry, device="cpu" if args.demo else "cuda", threads=1 if args.demo else None)


# -- ps / stop ------------------------------------------------------------------------------


def _ago(t: float | None) -> str:
    if t is None:
        return "-"
    s = max(0, int(time.time() - t))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


async def _find_or_explain(args: argparse.Namespace) -> Any:
    """The server's client, None when none runs, or one line (UserError) when one is there but
    cannot be talked to: another protocol, not answering, not the user's."""
    from gputui.remote.client import ServerError
    from gputui.remote.lifecycle import find, server_pid

    try:
        return await find(args.demo)
    except ServerError as e:
        pid = server_pid(args.demo)
        way_out = f"; `gputui stop --force{' --demo' if args.demo else ''}` ends it (pid {pid})" if pid else ""
        raise UserError(f"{e}{way_out}") from None


API_SCHEMA_VERSION = 1
BASE_URL = "http://localhost/v1"  # through the socket, the host part is only a name


async def api_info(args: argparse.Namespace) -> int:
    """`gputui api`: the socket, the base URL and ready-made ways to use them; exit 1 when no
    server runs or it serves no API."""
    client = await _find_or_explain(args)
    flag = " --demo" if args.demo else ""
    why: str | None
    api: dict[str, Any] = {}
    if client is None:
        why = f"no gputui server is running for this user: start one with `gputui serve --api{flag}`"
    else:
        api = client.server.get("api") or {}
        await client.close()
        why = None if api.get("socket") else f"your gputui server runs without the API: restart it with " \
                                                 f"`gputui stop{flag}` and `gputui serve --api{flag}`"
    if why is not None:
        if args.json:
            print(json.dumps({"schema_version": API_SCHEMA_VERSION, "socket": None, "base_url": None,
                              "tcp_url": None, "token_file": None, "error": why}))
        else:
            print(f"gputui: {why}", file=sys.stderr)
        return 1
    sock = str(api["socket"])
    tcp_url = f"http://{api['tcp']}/v1" if api.get("tcp") else None
    token_file = api.get("token_file")
    if args.json:
        print(json.dumps({"schema_version": API_SCHEMA_VERSION, "socket": sock, "base_url": BASE_URL,
                          "tcp_url": tcp_url, "token_file": token_file}, indent=2))
        return 0
    print(f"""OpenAI-compatible API of your gputui server (pid {client.server.get('pid')})
  socket    {sock}  (0600, and only your uid is answered)
  base URL  {BASE_URL}  (through the socket)
  try       curl --unix-socket {sock} {BASE_URL}/models
  python    client = openai.OpenAI(base_url="{BASE_URL}", api_key="unused",
                http_client=openai.DefaultHttpxClient(transport=httpx.HTTPTransport(uds="{sock}")))
  laptop    ssh -N -L 8000:{sock} {os.environ.get('USER', 'you')}@THIS-HOST, then base URL http://127.0.0.1:8000/v1""")
    if tcp_url:
        print(f"""  tcp       {tcp_url}  (a bearer token: the one in {token_file})
  try       curl -H "Authorization: Bearer $(cat {token_file})" {tcp_url}/models""")
    return 0


async def metrics_once(args: argparse.Namespace) -> int:
    """The server's /metrics when it serves the API; else the GPUs of this machine alone."""
    client = await _find_or_explain(args)
    sock = None
    if client is not None:
        sock = (client.server.get("api") or {}).get("socket")
        await client.close()
    if sock:
        import aiohttp

        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock)) as session:
            async with session.get("http://localhost/metrics") as response:
                sys.stdout.write(await response.text())
        return 0
    from gputui.cli.common import open_telemetry_or_explain
    from gputui.http_api.metrics import Metrics

    telemetry = open_telemetry_or_explain(args.demo)
    try:
        sys.stdout.write(Metrics(telemetry.snapshot).text().decode())
    finally:
        telemetry.close()
    return 0


async def ps(args: argparse.Namespace) -> int:
    client = await _find_or_explain(args)
    if client is None:
        if args.json:
            print(json.dumps({"schema_version": PS_SCHEMA_VERSION, "server": None, "models": []}))
        else:
            print("no gputui server is running for this user (start one with `gputui` or `gputui serve`)")
        return 0
    try:
        views = [v for v in client.models() if args.all or (v.gone_for() or 0) < PS_HIDE_AFTER_S]
        if args.json:
            print(json.dumps({"schema_version": PS_SCHEMA_VERSION, "server": client.server,
                              "models": [_ps_json(v) for v in views]}, indent=2))
            return 0
        print(f"server pid {client.server.get('pid')}, up {_ago(client.server.get('started'))}"
              f"{', SIMULATED (--demo)' if client.server.get('demo') else ''}")
        w = max([5, *(len(v.gpu_label) for v in views)])  # "node-b:2" on a cluster
        print(f"{'NAME':<16} {'KIND':<9} {'STATE':<10} {'GPU':<{w}} {'PID':>7} {'PRED MiB':>9} {'MEAS MiB':>9} "
              f"{'UP':>7} {'IDLE':>7} {'KEEP':>7} {'SLOTS':>7}")
        for v in views:
            print(visible(f"{v.name:<16} {v.kind:<9} {v.state.value:<10} {v.gpu_label:<{w}} {v.pid or '-':>7} "
                          f"{(v.predicted_bytes or 0) >> 20:>9} {(v.measured_bytes or 0) >> 20:>9} "
                          f"{_ago(v.ready_since):>7} {_ago(v.last_used):>7} {_keep(v):>7} {_slots(v):>7}",
                          one_line=True))
        if not views:
            print("(no models)")
        hidden = len(client.models()) - len(views)
        if hidden:
            print(f"({hidden} gone over {PS_HIDE_AFTER_S // 60} minutes ago: `gputui ps --all`)")
        return 0
    finally:
        await client.close()


def _keep(v: Any) -> str:
    left = v.keep_alive_left()
    return "forever" if left is None else f"{int(left)}s"


def _slots(v: Any) -> str:
    """Slots in use of the model's total, and requests waiting for one (`3/8`, `8/8 +2`)."""
    busy, waiting = min(v.in_use, v.slots), max(0, v.in_use - v.slots)
    return f"{busy}/{v.slots}" + (f" +{waiting}" if waiting else "")


def _ps_json(v: Any) -> dict[str, Any]:
    return {"name": v.name, "kind": v.kind, "state": v.state.value, "stage": v.stage, "pid": v.pid,
            "gpus": [{"index": g.index, "uuid": g.uuid, "host": g.host} for g in v.gpus], "predicted_bytes": v.predicted_bytes,
            "measured_bytes": v.measured_bytes, "loaded_since": v.ready_since, "last_used": v.last_used,
            "keep_alive_s": v.keep_alive_s, "keep_alive_left_s": v.keep_alive_left(), "error": v.error,
            "slots": v.slots, "slots_in_use": min(v.in_use, v.slots), "waiting": max(0, v.in_use - v.slots)}


async def stop(args: argparse.Namespace) -> int:
    """Unload one model, or all and end the server. Ends cleanly whatever the server does
    meanwhile: a server that goes away during it is stopped, which is what was asked."""
    from gputui.remote.client import ServerGone
    from gputui.remote.lifecycle import force_stop

    if args.force:
        print(force_stop(args.demo))
        return 0
    client = await _find_or_explain(args)
    if client is None:
        print("no gputui server is running for this user")
        return 0
    pid = client.server.get("pid")
    try:
        names = [args.model] if args.model else [v.name for v in client.models() if v.ready]
        for name in names:
            try:
                r = await client.unload(name)
            except ServerGone:
                print(f"server pid {pid} went away while unloading {name} (its workers end with it)")
                return 0
            except CommandRefused as e:
                raise UserError(str(e)) from None
            back = f"{(r.returned_bytes or 0) >> 20} MiB back" if r.returned else "its memory is still held"
            print(visible(f"{name}: unloaded in {r.seconds or 0:.2f} s, {back}", one_line=True))
        if not args.model:
            with contextlib.suppress(ServerGone):  # it may close before its answer reaches us: same end
                await client.shutdown()
            await _gone(pid, 60.0)
            print(f"server pid {pid} stopped")
        return 0
    finally:
        await client.close()


async def _gone(pid: Any, timeout: float) -> None:
    """Wait until the process `pid` has exited (so a start right after finds no lock held)."""
    from gputui.remote.lifecycle import exited

    end = time.monotonic() + timeout
    while isinstance(pid, int) and not exited(pid) and time.monotonic() < end:
        await asyncio.sleep(0.05)
