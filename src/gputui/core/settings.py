"""The user's settings file (TOML in the config folder; `gputui config` prints it): parsed and
checked here, purely. A bad value is one line naming the key, the line and what is allowed.

    refresh = 0.5          # seconds between dashboard refreshes (0.1 to 3600)
    theme = "textual-dark" # a Textual theme name
    keep_alive = "30m"     # for models `gputui chat` / `gputui run` load without their own:
                           # 0 (unload after the reply), 30s, 10m, 2h, forever. The dashboard's
                           # loads and the profiles it applies stay until unloaded unless they say
    allow_shared = false   # may `auto` place on a GPU where another user's process runs?
    reserve = "0"          # left free on every GPU for other users: "4GiB", "512MiB", 0
    never_touch = []       # GPUs gputui never places on: index, UUID or PCI bus id
    api_queue = 16         # requests one model may have under way through the API (serve --api);
                           # more get 429 with Retry-After
    api_load = ""          # profiles whose models an API request may load by name: "NAME" or a list
                           # (the fixed order, its preflight first); "": only models already loaded answer
    evict = "never"        # "idle": a load that does not fit unloads your own idle models first,
                           # least recently used first (never a pinned one, never another user's)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gputui.core import files
from gputui.core.placement import DEFAULT_MARGIN_BYTES, PlacementPolicy
from gputui.core.requests import effective_keep_alive, parse_duration
from gputui.core.units import human_bytes

# Refreshing faster than this only burns a core (NVML samples utilisation every 1/6 s); the
# settings' refresh and the dashboard's --interval are checked by the same rule.
MIN_REFRESH_S, MAX_REFRESH_S = 0.1, 3600.0
MAX_SETTINGS_BYTES = 64 * 1024
KEYS = ("refresh", "theme", "keep_alive", "allow_shared", "reserve", "never_touch", "api_queue", "api_load", "evict")
EVICT = ("never", "idle")
MAX_API_QUEUE = 10_000
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 1000, "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
          "g": 1 << 30, "gib": 1 << 30, "gb": 10**9, "t": 1 << 40, "tib": 1 << 40, "tb": 10**12}


class SettingsError(ValueError):
    """str() is one line: the file, the key and what to write instead."""


DEFAULT_KEEP_ALIVE_S = 1800.0


@dataclass(frozen=True)
class Settings:
    refresh_s: float = 0.5
    theme: str = "textual-dark"
    # one-off `gputui chat` / `gputui run` loads must not hold a shared GPU for ever (Ollama: 5 min);
    # None: models stay until unloaded (Ollama's -1)
    keep_alive_s: float | None = DEFAULT_KEEP_ALIVE_S
    allow_shared: bool = False
    reserve_bytes: int = 0
    never_touch: tuple[str, ...] = ()
    api_queue: int = 16
    api_load: tuple[str, ...] = ()  # profiles' names
    evict: str = "never"

    def policy(self) -> PlacementPolicy:
        return PlacementPolicy(reserve_bytes=self.reserve_bytes, margin_bytes=DEFAULT_MARGIN_BYTES,
                               allow_shared=self.allow_shared, never_touch=self.never_touch)

    def to_toml_lines(self) -> list[str]:
        """The effective values, as a settings file would say them (for `gputui config`)."""
        keep = "forever" if self.keep_alive_s is None else f"{self.keep_alive_s:g}s"
        touch = ", ".join(f'"{g}"' for g in self.never_touch)
        return [f"refresh = {self.refresh_s:g}", f'theme = "{self.theme}"', f'keep_alive = "{keep}"',
                f"allow_shared = {'true' if self.allow_shared else 'false'}",
                f'reserve = "{human_bytes(self.reserve_bytes).replace(" ", "")}"' if self.reserve_bytes else 'reserve = "0"',
                f"never_touch = [{touch}]", f"api_queue = {self.api_queue}", f"api_load = [{', '.join(f'{chr(34)}{n}{chr(34)}' for n in self.api_load)}]", f'evict = "{self.evict}"']

    def to_json(self) -> dict[str, Any]:
        return {"refresh_s": self.refresh_s, "theme": self.theme, "keep_alive_s": self.keep_alive_s,
                "allow_shared": self.allow_shared, "reserve_bytes": self.reserve_bytes,
                "never_touch": list(self.never_touch), "api_queue": self.api_queue, "api_load": list(self.api_load),
                "evict": self.evict}


def template() -> str:
    """A settings file with every key at its default, commented out (`gputui config --init`)."""
    import textwrap

    block = textwrap.dedent((__doc__ or "").split("\n\n", 1)[1]).strip().splitlines()
    return "# gputui settings: remove the '# ' before a key to set it\n" + "".join(f"# {line}\n" for line in block)


def parse_size(raw: Any) -> int:
    """Bytes from 0, 4096, "512MiB", "4 GiB", "1.5G"; ValueError otherwise."""
    if isinstance(raw, bool):
        raise ValueError(f"{raw!r} is not a size")
    if isinstance(raw, int):
        value, unit = float(raw), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(raw))
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"{str(raw)[:30]!r} is not a size: say 0, \"512MiB\" or \"4GiB\"")
        value, unit = float(m.group(1)), m.group(2).lower()
    n = value * _UNITS[unit]
    if not math.isfinite(n) or n < 0 or n > 1 << 50:
        raise ValueError(f"{str(raw)[:30]!r} is not a size a GPU has")
    return int(n)


def refresh_seconds(value: Any) -> float:
    """A refresh interval, or ValueError saying the range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not MIN_REFRESH_S <= value <= MAX_REFRESH_S:
        raise ValueError(f"give seconds from {MIN_REFRESH_S} to {MAX_REFRESH_S:.0f}, e.g. 0.5")
    return float(value)


def api_queue(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_API_QUEUE:
        raise ValueError(f"give a whole number from 1 to {MAX_API_QUEUE}, e.g. 16")
    return value


def load_settings_file(path: Path) -> Settings:
    """The settings in `path`, the defaults when there is none, SettingsError (one line) else."""
    try:
        text = files.read_small(path, MAX_SETTINGS_BYTES).decode("utf-8")
    except FileNotFoundError:
        return Settings()
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"cannot read the settings file {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        doc = files.loads_toml(text)
    except (files.TOMLDecodeError, RecursionError) as e:
        raise SettingsError(f"{path}: not valid TOML ({e}); fix it, or remove it for the defaults") from None
    return parse_settings(doc, str(path))


def parse_settings(doc: dict[str, Any], source: str) -> Settings:
    """Settings from a parsed TOML document; SettingsError naming the first bad key."""
    def bad(key: str, why: str) -> SettingsError:
        return SettingsError(f"{source}: {key}: {why}")

    unknown = sorted(set(doc) - set(KEYS))
    if unknown:
        raise bad(unknown[0], f"not a setting; the settings are {', '.join(KEYS)}")
    out: dict[str, Any] = {}
    # the keys whose parser says what is wrong (a ValueError): key -> (Settings field, parser)
    parsed = {"refresh": ("refresh_s", refresh_seconds),
              "keep_alive": ("keep_alive_s", lambda v: effective_keep_alive(parse_duration(v), None)),
              "reserve": ("reserve_bytes", parse_size), "api_queue": ("api_queue", api_queue)}
    for key, (field, parse) in parsed.items():
        if key in doc:
            try:
                out[field] = parse(doc[key])
            except ValueError as e:
                raise bad(key, str(e)) from None
    if "theme" in doc:
        t = doc["theme"]
        if not isinstance(t, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,39}", t):
            raise bad("theme", 'give a Textual theme name, e.g. "textual-dark" or "nord"')
        out["theme"] = t
    if "allow_shared" in doc:
        if not isinstance(doc["allow_shared"], bool):
            raise bad("allow_shared", "say true or false")
        out["allow_shared"] = doc["allow_shared"]
    if "evict" in doc:
        if doc["evict"] not in EVICT:
            raise bad("evict", 'say "never" or "idle"')
        out["evict"] = doc["evict"]
    if "api_load" in doc:
        names = doc["api_load"]
        names = ([names] if names else []) if isinstance(names, str) else names
        if not isinstance(names, list) or len(names) > 16 or \
                not all(isinstance(n, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", n) for n in names):
            raise bad("api_load", 'give a profile\'s name (`gputui profiles` lists them), a list of names, or "" for none')
        out["api_load"] = tuple(names)
    if "never_touch" in doc:
        gpus = doc["never_touch"]
        if not isinstance(gpus, list) or not all(isinstance(g, (str, int)) and not isinstance(g, bool) for g in gpus):
            raise bad("never_touch", 'give a list of GPUs: indices, UUIDs or PCI bus ids, e.g. [0, "GPU-5e1a..."]')
        out["never_touch"] = tuple(str(g) for g in gpus)
    return Settings(**out)
