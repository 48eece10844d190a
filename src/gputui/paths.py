"""Where gputui's files live, and how they are made: the user's alone.

| folder        | holds                                  | where (override)                                  |
|---------------|----------------------------------------|---------------------------------------------------|
| data_dir()    | conversations/, events.jsonl           | platformdirs user data dir (GPUTUI_DATA_DIR)      |
| config_dir()  | settings.toml, profiles/ the user saved| platformdirs user config dir (GPUTUI_CONFIG_DIR)  |
| runtime_dir() | the scheduler lock (later: the socket) | $XDG_RUNTIME_DIR/gputui, else the user state dir  |
|               |                                        | (GPUTUI_RUNTIME_DIR)                              |

A shared server is hostile (see README, "Hostile input"): conversations are private, and a
path in a shared temp folder can be created first by another user (a symlink that makes us
overwrite our own file, a lock file we cannot open). So nothing of ours goes to /tmp; folders
are made 0700 and files 0600; a folder or file that exists with looser modes is tightened and
the user is told once (`take_notes`); one owned by someone else, or a symlink where a file of
ours should be, is refused with one line (`UnsafePath`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_notes: list[str] = []


class UnsafePath(OSError):
    """A path we would write is not safely ours; str() is one line saying what to do."""


def _user_dir(env_var: str, kind: str) -> Path:
    """$env_var if set, else platformdirs' user_<kind>_dir for gputui."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    import platformdirs

    return Path(getattr(platformdirs, f"user_{kind}_dir")("gputui"))


def data_dir() -> Path:
    return _user_dir("GPUTUI_DATA_DIR", "data")


def conversations_dir() -> Path:
    return data_dir() / "conversations"


def timeline_path() -> Path:
    """The lifecycle event log (JSONL)."""
    return data_dir() / "events.jsonl"


def config_dir() -> Path:
    return _user_dir("GPUTUI_CONFIG_DIR", "config")


def settings_path() -> Path:
    """The user's settings (TOML; core/settings.py says what it holds)."""
    return config_dir() / "settings.toml"


def user_profiles_dir() -> Path:
    return config_dir() / "profiles"


def shipped_profiles_dir() -> Path:
    import gputui.shipped_profiles as shipped  # type: ignore[import-not-found]  # profiles/, mapped in pyproject

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
    """Runtime files (lock, socket): $XDG_RUNTIME_DIR/gputui when that folder is the user's own
    (systemd makes it 0700, per user), else a folder in the user's state dir - never a fixed
    name in a shared /tmp (su, sudo -u, cron and some SSH setups leave XDG_RUNTIME_DIR unset)."""
    env = os.environ.get("GPUTUI_RUNTIME_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and _own_private_dir(Path(xdg)):
        return Path(xdg) / "gputui"
    import platformdirs

    return Path(platformdirs.user_state_dir("gputui")) / "run"


def _own_private_dir(path: Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def private_dir(path: Path) -> Path:
    """`path` (and missing parents) as a folder only the user can enter: made 0700, tightened
    if it exists looser, refused if it is not a folder or belongs to someone else."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        st = os.stat(path)  # a link the user made to elsewhere (a bigger disk) is fine if it is theirs
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{path} is not a folder: move it away so gputui can make its folder there")
    if st.st_uid != os.getuid():
        raise UnsafePath(f"{path} belongs to uid {st.st_uid}, not to you: remove it, or point gputui elsewhere")
    if st.st_mode & 0o077:
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


def private_opener(path: str, flags: int) -> int:
    """An `opener=` for open() and aiofiles.open(): the same checks as open_private."""
    return open_private(Path(path), flags)


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
