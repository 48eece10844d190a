"""Where gputui's files live, and how they are made: the user's alone.

| folder        | holds                                  | where (override)                                  |
|---------------|----------------------------------------|---------------------------------------------------|
| data_dir()    | conversations/, events.jsonl           | platformdirs user data dir (GPUTUI_DATA_DIR)      |
| config_dir()  | settings.toml, profiles/ the user saved| platformdirs user config dir (GPUTUI_CONFIG_DIR)  |
| state_dir()   | logs/ (the server's log, rotated)      | platformdirs user state dir (GPUTUI_STATE_DIR)    |
| runtime_dir() | the server's socket, lock and pid      | ~/.local/state/gputui/run/HOST, by the passwd home|
|               |                                        | (GPUTUI_RUNTIME_DIR=DIR: DIR/gputui-UID)          |

A shared server is hostile (see README, "Hostile input"): conversations are private, and a
path in a shared temp folder can be created first by another user (a symlink that makes us
overwrite our own file, a lock file we cannot open). So nothing of ours goes to /tmp; folders
are made 0700 and files 0600; a folder or file that exists with looser modes is tightened and
the user is told once (`take_notes`); one owned by someone else, or a symlink where a file of
ours should be, is refused with one line (`UnsafePath`).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path

from gputui.core import env

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_notes: list[str] = []


class UnsafePath(OSError):
    """A path we would write is not safely ours; str() is one line saying what to do."""


def _user_dir(env_var: str, kind: str) -> Path:
    """$env_var if set, else platformdirs' user_<kind>_dir for gputui."""
    given = env.get(env_var)
    if given:
        return Path(given)
    import platformdirs

    return Path(getattr(platformdirs, f"user_{kind}_dir")("gputui"))


def data_dir() -> Path:
    return _user_dir("GPUTUI_DATA_DIR", "data")


def conversations_dir() -> Path:
    return data_dir() / "conversations"


def timeline_path(demo: bool = False) -> Path:
    """The lifecycle event log (JSONL); a simulated (--demo) scheduler keeps its own, so demo
    events never mix with real ones (nor reach `gputui doctor --bundle`)."""
    return data_dir() / ("demo-events.jsonl" if demo else "events.jsonl")


def state_dir() -> Path:
    return _user_dir("GPUTUI_STATE_DIR", "state")


def logs_dir() -> Path:
    return state_dir() / "logs"


def config_dir() -> Path:
    return _user_dir("GPUTUI_CONFIG_DIR", "config")


def settings_path() -> Path:
    """The user's settings (TOML; core/settings.py says what it holds)."""
    return config_dir() / "settings.toml"


def user_profiles_dir() -> Path:
    return config_dir() / "profiles"


def shipped_profiles_dir() -> Path:
    import gputui.shipped_profiles as shipped  # type: ignore[import-not-found,import-untyped,unused-ignore]  # profiles/, mapped in pyproject

    return Path(shipped.__file__).parent


def profile_names() -> list[str]:
    """Every profile a user can name: saved ones and the shipped examples."""
    return sorted({f.stem for d in (user_profiles_dir(), shipped_profiles_dir()) if d.is_dir() for f in d.glob("*.toml")})


def find_profile(name: str) -> Path:
    """A profile by name (saved first, then shipped), or a .toml path; ProfileError naming the
    known ones otherwise."""
    from gputui.core.profiles import ProfileError

    p = Path(name).expanduser()
    if p.suffix == ".toml" or p.exists():
        return p
    for d in (user_profiles_dir(), shipped_profiles_dir()):
        if (d / f"{name}.toml").is_file():
            return d / f"{name}.toml"
    raise ProfileError(f"no profile named {name!r}; known profiles: {', '.join(profile_names())} (or give a .toml path)")


def load_named_profile(name: str, check_paths: bool = True):  # type: ignore[no-untyped-def]  # -> Profile
    from gputui.core.profiles import load_profile

    return load_profile(find_profile(name), check_paths=check_paths)


def runtime_dir() -> Path:
    """The server's socket, lock and pid: one folder per user and host that every session of
    that user finds, whoever set its environment.

    Not $XDG_RUNTIME_DIR: systemd-logind removes it at the user's last logout (the server would
    be orphaned, its models unreachable), and su, sudo -u, cron and other SSH setups disagree on
    it (two servers for one user). Not a fixed name in /tmp either: another user can create it
    first. So: the home folder from the password database (not $HOME, which `su` keeps from the
    caller), `.local/state/gputui/run/HOST` - per host, since an NFS home is shared by hosts
    whose sockets and locks are not. GPUTUI_RUNTIME_DIR=DIR puts it in DIR/gputui-UID: a folder
    gputui makes and checks, never DIR itself (which may be shared)."""
    base = env.get("GPUTUI_RUNTIME_DIR")
    if base:
        return Path(base).expanduser() / f"gputui-{os.getuid()}"
    return home_dir() / ".local" / "state" / "gputui" / "run" / host_name()


def home_dir() -> Path:
    import pwd

    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:  # a uid with no passwd entry (some containers)
        return Path.home()


def host_name() -> str:
    """This host's short name, as a file name (an NFS home is shared by hosts)."""
    import socket

    short = socket.gethostname().split(".")[0]
    return re.sub(r"[^A-Za-z0-9_-]", "_", short)[:64] or "localhost"


def private_runtime_dir() -> Path:
    """runtime_dir(), made if missing and checked on every use (as tmux checks /tmp/tmux-UID):
    a folder, not a link, the user's own, open to no one else. UnsafePath (one line) otherwise.
    The folder is gputui's own, so a looser mode is tightened; its parents are made if missing
    but never changed."""
    path = runtime_dir()
    try:
        path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, PRIVATE_DIR_MODE)
    except OSError as e:
        raise UnsafePath(f"cannot make gputui's runtime folder {path}: {e.strerror or e}") from None
    check_runtime_dir(path, tighten=True)
    return path


def check_runtime_dir(path: Path, tighten: bool = False) -> None:
    """`path` is a real folder of this user's, mode 0700 (tightened when `tighten`); UnsafePath
    (one line) otherwise. A client checks this before it connects to a socket in it."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{path} is not a folder (a link or a file is there): remove it")
    if st.st_uid != os.getuid():
        raise UnsafePath(f"{path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}): gputui will not "
                         "use it; remove it, or set GPUTUI_RUNTIME_DIR to a folder of your own")
    if st.st_mode & 0o077:
        if not tighten:
            raise UnsafePath(f"{path} is open to other users ({stat.filemode(st.st_mode)}): "
                             f"run `chmod 700 {path}`, or start gputui to have it tightened")
        os.chmod(path, PRIVATE_DIR_MODE)
        note(f"{path} was open to other users ({stat.filemode(st.st_mode)}); it is now 0700")


PATH_SETTINGS = ("GPUTUI_DATA_DIR", "GPUTUI_CONFIG_DIR", "GPUTUI_STATE_DIR", "GPUTUI_RUNTIME_DIR")


def _given_by_a_setting(path: Path) -> bool:
    """A folder the user named in a path setting: it may be shared on purpose (a team folder
    with the sticky bit), so gputui never changes its mode; what must be private goes in
    subfolders gputui makes, and files are 0600 wherever they are."""
    for var in PATH_SETTINGS:
        value = os.environ.get(var)
        if value and Path(value).expanduser().absolute() == path.absolute():
            return True
    return False


def private_dir(path: Path) -> Path:
    """`path` (and missing parents) as a folder only the user can enter: made 0700, tightened
    if it exists looser (unless a path setting names it: see _given_by_a_setting), refused if
    it is not a folder or belongs to someone else."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        st = os.stat(path)  # a link the user made to elsewhere (a bigger disk) is fine if it is theirs
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{path} is not a folder: move it away so gputui can make its folder there")
    if st.st_uid != os.getuid():
        raise UnsafePath(f"{path} belongs to uid {st.st_uid}, not to you: remove it, or point gputui elsewhere")
    if st.st_mode & 0o077 and not _given_by_a_setting(path):
        os.chmod(path, PRIVATE_DIR_MODE)
        note(f"{path} was readable by other users ({stat.filemode(st.st_mode)}); it is now 0700")
    return path


def open_private(path: Path, flags: int) -> int:
    """os.open for a file of ours: created 0600, never through a symlink, checked to be a regular
    file owned by the user, tightened to 0600 if it was looser. Returns the descriptor."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except OSError as e:
        if e.errno == 40:  # ELOOP: the last part is a symlink
            raise UnsafePath(f"{path} is a symbolic link, which gputui never follows for its own files: "
                             "remove it") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{path} is not a regular file: remove it")
        if st.st_uid != os.getuid():
            raise UnsafePath(f"{path} belongs to uid {st.st_uid}, not to you: remove it")
        if st.st_mode & 0o077:
            os.fchmod(fd, PRIVATE_FILE_MODE)
            note(f"{path} was readable by other users ({stat.filemode(st.st_mode)}); it is now 0600")
    except BaseException:
        os.close(fd)
        raise
    return fd


def append_whole(path: Path, data: str, sync: bool = True) -> None:
    """Append `data` to a file of ours (fsynced when `sync`), or leave the file exactly as it
    was: a write cut short (the disk filled mid-record) is truncated back, so a retry never
    leaves a torn or doubled line. OSError when it could not."""
    fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        try:
            raw = data.encode("utf-8")
            while raw:
                raw = raw[os.write(fd, raw):]
            if sync:
                os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def private_opener(path: str, flags: int) -> int:
    """An `opener=` for open() and aiofiles.open(): the same checks as open_private."""
    return open_private(Path(path), flags)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every process gputui starts (the background server, a worker, the
    demo checkpoint builder): this one's, `extra` on top, and this gputui's source folder on
    PYTHONPATH only when it runs from a source checkout (the child must import the same gputui).
    An installed gputui (site-packages) adds nothing: PYTHONPATH=site-packages leaked into every
    worker and into whatever the worker starts."""
    env = {**os.environ, **(extra or {})}
    src = Path(__file__).resolve().parents[1]  # the folder holding the gputui package
    if src.name not in ("site-packages", "dist-packages"):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH")) if p)
    return env


def note(text: str) -> None:
    """Something the user should hear about once (a folder made private, a file that cannot be
    written); the TUI shows it, the CLI prints it."""
    if text not in _notes:
        _notes.append(text)


def take_notes() -> list[str]:
    """What was tightened since the last call (each said once: the TUI shows it, the CLI prints it)."""
    out = list(_notes)
    _notes.clear()
    return out
