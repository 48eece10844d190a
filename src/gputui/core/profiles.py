"""Placement profiles: named lists of models and where they go, in TOML.

    name = "blip2-and-chatglm3"
    [[models]]
    name = "chatglm3"
    kind = "chatglm3"                 # may be left out: config.json's model_type says
    path = "/models/chatglm3-6b"      # or "demo:chatglm3" for the built-in tiny model
    gpus = ["GPU-5e1a..."]            # UUID, PCI bus id, NVML index, or "auto"
    gpu_index_hint = 0                # where that GPU was, for messages when it is missing
    dtype = "bfloat16"
    max_context = 8192
    pinned = true                     # never unloaded to make room (the settings' evict = "idle")
    max_batch = 16                    # replies at once, a KV cache of max_context each (chatglm3)
    [models.generation]
    max_new_tokens = 512

Every problem is one line naming the file (and line, where TOML tells one); never a traceback.
Parsing uses tomllib only: no code runs, and trust_remote_code does not exist here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gputui.core import files, generation
from gputui.core.atomic import atomic_write
from gputui.core.checkpoint_info import CheckpointError
from gputui.core.kinds import detect_kind, kind_named, kind_names
from gputui.core.requests import DTYPES, MAX_BATCH_LIMIT, ModelRequest, parse_duration

MAX_PROFILE_BYTES = 256 * 1024
MODEL_KEYS = {"name", "kind", "path", "gpus", "gpu_index_hint", "dtype", "max_context", "generation", "keep_alive",
              "node", "pinned", "max_batch"}
TOP_KEYS = {"name", "description", "models"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ProfileError(ValueError):
    """str() is one line: 'FILE:LINE: what is wrong, and what to do'."""


@dataclass(frozen=True)
class Profile:
    name: str
    models: tuple[ModelRequest, ...]
    description: str = ""
    source: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "models": [m.to_json() for m in self.models],
                "source": str(self.source) if self.source else None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Profile:
        """A profile that crossed the socket; its models are checked as a loaded profile's are."""
        models = d.get("models")
        if not isinstance(models, list) or not models:
            raise ProfileError("a profile needs at least one model")
        reqs = tuple(ModelRequest.from_json(m) for m in models if isinstance(m, dict))
        for r in reqs:
            if not NAME_RE.match(r.name) or r.kind not in kind_names():
                raise ProfileError(f"model {r.name[:40]!r} of kind {r.kind[:20]!r} is not one a profile can hold")
        return cls(str(d.get("name") or "profile"), reqs, str(d.get("description") or ""),
                   Path(d["source"]) if d.get("source") else None)


def _line_of(text: str, key: str, model_index: int | None) -> int | None:
    """Best-effort line number of `key` (inside the n-th [[models]] table, if given)."""
    lines = text.splitlines()
    start = 0
    if model_index is not None:
        seen = -1
        for i, line in enumerate(lines):
            if line.strip() == "[[models]]":
                seen += 1
                if seen == model_index:
                    start = i
                    break
    pat = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for i in range(start, len(lines)):
        if i > start and model_index is not None and lines[i].strip() == "[[models]]":
            break
        if pat.match(lines[i]):
            return i + 1
    return start + 1 if model_index is not None else None


def _err(src: str, text: str, msg: str, key: str | None = None, model_index: int | None = None) -> ProfileError:
    line = _line_of(text, key, model_index) if key else None
    return ProfileError(f"{src}:{line}: {msg}" if line else f"{src}: {msg}")


def parse_profile(text: str, source: str = "<profile>", base_dir: Path | None = None,
                  check_paths: bool = True) -> Profile:
    if len(text.encode("utf-8", "replace")) > MAX_PROFILE_BYTES:
        raise ProfileError(f"{source}: {len(text)} bytes is too large for a profile (limit {MAX_PROFILE_BYTES})")
    try:
        doc = files.loads_toml(text)
    except files.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        where = f"{source}:{m.group(1)}" if m else source
        raise ProfileError(f"{where}: invalid TOML: {str(e).split(' (at line')[0]}") from None
    except RecursionError:  # tomllib recurses per nesting level: [[[[... 200k deep
        raise ProfileError(f"{source}: invalid TOML: nested too deeply") from None
    unknown = set(doc) - TOP_KEYS
    if unknown:
        k = sorted(unknown)[0]
        raise _err(source, text, f"unknown key {k!r}; a profile has {', '.join(sorted(TOP_KEYS))}", k)
    name = doc.get("name", Path(source).stem)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _err(source, text, "name must be letters, digits, '-', '_' or '.', up to 64 characters", "name")
    models = doc.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, dict) for m in models):
        raise _err(source, text, "a profile needs at least one [[models]] table", "models")
    entries: list[ModelRequest] = []
    seen: set[str] = set()
    for i, m in enumerate(models):
        entry = _model(m, i, source, text, base_dir, check_paths)
        if entry.name in seen:
            raise _err(source, text, f"duplicate model name {entry.name!r}; names must be unique", "name", i)
        seen.add(entry.name)
        entries.append(entry)
    desc = doc.get("description", "")
    if not isinstance(desc, str):
        raise _err(source, text, "description must be a string", "description")
    return Profile(name, tuple(entries), desc, Path(source) if source != "<profile>" else None)


def _model(m: dict[str, Any], i: int, src: str, text: str, base_dir: Path | None, check_paths: bool) -> ModelRequest:
    def bad(msg: str, key: str) -> ProfileError:
        return _err(src, text, f"models[{i}]: {msg}", key, i)

    unknown = set(m) - MODEL_KEYS
    if unknown:
        k = sorted(unknown)[0]
        raise bad(f"unknown key {k!r}; a model has {', '.join(sorted(MODEL_KEYS))}", k)
    if "kind" not in m and isinstance(m.get("path"), str) and m["path"]:
        m = {**m, "kind": _detected_kind(m["path"], base_dir, bad)}
    for key in ("name", "kind", "path"):
        if not isinstance(m.get(key), str) or not m[key]:
            raise bad(f"{key} must be a non-empty string", key)
    if not NAME_RE.match(m["name"]):
        raise bad("name must be letters, digits, '-', '_' or '.'", "name")
    if m["kind"] not in kind_names():
        raise bad(f"unknown kind {m['kind']!r}; known kinds: {', '.join(kind_names())}", "kind")
    gpus = m.get("gpus", ["auto"])
    if isinstance(gpus, (str, int)):
        gpus = [gpus]
    if not isinstance(gpus, list) or not gpus or not all(isinstance(g, (str, int)) and not isinstance(g, bool) for g in gpus):
        raise bad("gpus must be a list of GPU UUIDs, PCI bus ids or indices (or [\"auto\"])", "gpus")
    hint = m.get("gpu_index_hint")
    if hint is not None and (not isinstance(hint, int) or isinstance(hint, bool) or hint < 0):
        raise bad("gpu_index_hint must be a whole number >= 0", "gpu_index_hint")
    dtype = m.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise bad(f"dtype must be one of {', '.join(DTYPES)}", "dtype")
    ctx = m.get("max_context")
    if ctx is not None and (not isinstance(ctx, int) or isinstance(ctx, bool) or not 16 <= ctx <= 1_048_576):
        raise bad("max_context must be a whole number of tokens between 16 and 1048576", "max_context")
    gen = m.get("generation", {})
    if not isinstance(gen, dict):
        raise bad("generation must be a table", "generation")
    for k, v in gen.items():
        why = generation.check(k, v)
        if why:
            raise bad(why, k)
    keep_alive = None
    if "keep_alive" in m:
        try:
            keep_alive = parse_duration(m["keep_alive"])
        except ValueError as e:
            raise bad(str(e), "keep_alive") from None
    node = m.get("node")
    if node is not None and (not isinstance(node, str) or not node.strip()):
        raise bad("node must be a host name or a Ray node id", "node")
    pinned = m.get("pinned", False)
    if not isinstance(pinned, bool):
        raise bad("pinned must be true or false", "pinned")
    max_batch = m.get("max_batch")
    if max_batch is not None:
        if not isinstance(max_batch, int) or isinstance(max_batch, bool) or not 1 <= max_batch <= MAX_BATCH_LIMIT:
            raise bad(f"max_batch must be a whole number of replies at once between 1 and {MAX_BATCH_LIMIT}",
                      "max_batch")
        if not kind_named(m["kind"]).batches:
            raise bad(f"{m['kind']} answers one request at a time; max_batch is for "
                      f"{', '.join(k for k in kind_names() if kind_named(k).batches)}", "max_batch")
    path = _resolve_path(m["path"], base_dir)
    if check_paths and not path.startswith("demo:") and not Path(path).is_dir():
        raise bad(f"path {m['path']!r} does not exist or is not a folder", "path")
    return ModelRequest(m["name"], m["kind"], path, tuple(str(g) for g in gpus), dtype, ctx, dict(gen),
                        keep_alive_s=keep_alive, node=node, pinned=pinned, gpu_index_hint=hint, max_batch=max_batch)


def _detected_kind(raw: str, base_dir: Path | None, bad: Any) -> str:
    """A model entry without `kind`: the one its folder's config.json names (demo:NAME: NAME)."""
    if raw.startswith("demo:"):
        return raw.removeprefix("demo:")
    try:
        return detect_kind(Path(_resolve_path(raw, base_dir)))
    except CheckpointError as e:
        raise bad(f"no kind given, and none found: {e}", "path") from None


def _resolve_path(raw: str, base_dir: Path | None) -> str:
    """demo:NAME stays; ~ expands; a relative path is taken from the profile's folder."""
    if raw.startswith("demo:"):
        return raw
    p = Path(raw).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return str(p.resolve())


def load_profile(path: Path, check_paths: bool = True) -> Profile:
    try:
        raw = files.read_small(path, MAX_PROFILE_BYTES)  # a FIFO named x.toml is refused, not waited on
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such profile file") from None
    except files.FileTooLarge:
        raise ProfileError(f"{path}: too large for a profile (limit {MAX_PROFILE_BYTES} bytes)") from None
    except files.NotRegularFile as e:
        raise ProfileError(str(e)) from None
    except OSError as e:
        raise ProfileError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not UTF-8 text") from None
    return parse_profile(text, str(path), path.parent, check_paths)


def dump_profile(p: Profile) -> str:
    import tomli_w

    doc: dict[str, Any] = {"name": p.name}
    if p.description:
        doc["description"] = p.description
    doc["models"] = []
    for m in p.models:
        d: dict[str, Any] = {"name": m.name, "kind": m.kind, "path": m.path, "gpus": list(m.gpus)}
        if m.gpu_index_hint is not None:
            d["gpu_index_hint"] = m.gpu_index_hint
        if m.dtype:
            d["dtype"] = m.dtype
        if m.max_context:
            d["max_context"] = m.max_context
        if m.generation:
            d["generation"] = dict(m.generation)
        if m.keep_alive_s is not None:
            d["keep_alive"] = "forever" if m.keep_alive_s == float("inf") else f"{m.keep_alive_s:g}s"
        if m.node:
            d["node"] = m.node
        if m.pinned:
            d["pinned"] = True
        if m.max_batch:
            d["max_batch"] = m.max_batch
        doc["models"].append(d)
    header = "# gputui placement profile (written by gputui; edit freely, comments are not kept)\n"
    return header + tomli_w.dumps(doc)


def save_target(name: str, folder: Path) -> tuple[str, Path]:
    """Where `save as NAME` writes, and the profile's name: a bare name goes into `folder` (and
    must be one a profile can have, or the file would not load back); a path ending in .toml is
    the user's own choice of file. Anything else - spaces, '../x' - is refused in one line."""
    name = name.strip()
    if name.endswith(".toml"):
        path = Path(name).expanduser()
        stem = path.stem
    else:
        path, stem = folder / f"{name}.toml", name
    if not NAME_RE.match(stem):
        raise ProfileError(f"{name!r} is not a profile name: use letters, digits, '-', '_' or '.' "
                           "(up to 64), or give a file path ending in .toml")
    return stem, path


def save_profile(p: Profile, path: Path) -> None:
    """Atomic: the old file survives any crash; the previous version is kept as .bak."""
    atomic_write(path, dump_profile(p).encode("utf-8"))
