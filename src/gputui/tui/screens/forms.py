"""Small modal forms: load a model, pick a GPU, name a profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select

from gputui.core.checkpoint_info import CheckpointError
from gputui.core.kinds import detect_kind, kind_names
from gputui.core.profiles import NAME_RE
from gputui.core.requests import ModelRequest
from gputui.tui.outside import outside

AUTO_KIND = "auto (config.json says)"


class _Form(ModalScreen[Any]):
    DEFAULT_CSS = """
    _Form { align: center middle; }
    _Form > Vertical { width: 72; max-width: 100%; height: auto; max-height: 100%; border: thick $primary;
                       background: $surface; padding: 0 1; }
    _Form Label { margin-top: 1; width: 100%; }
    _Form .buttons { height: auto; margin-top: 1; }
    _Form .buttons Button { margin-right: 2; }
    _Form .row { height: 1; margin-top: 1; }
    _Form .row Label { width: 12; margin-top: 0; }
    _Form .row Input, _Form .row Select { width: 1fr; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        else:
            self.submit()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.submit()

    def submit(self) -> None:
        raise NotImplementedError


def gpu_options(snapshot: Any, splits: bool = False) -> list[tuple[Any, str]]:
    """Select options: auto, each GPU, and (`splits`) its layers spread over two GPUs or over
    all of them. A value lists UUIDs, comma-separated, in the order the layers go."""
    opts: list[tuple[Any, str]] = [("auto (most free, no other users)", "auto")]
    gpus = list(snapshot.gpus if snapshot else ())
    for g in gpus:
        opts.append((outside(f"GPU {g.index} {g.uuid[:16]}… free {(g.free_bytes or 0) >> 30} GiB"), g.uuid))
    if splits and len(gpus) >= 2:
        sets = [(a, b) for i, a in enumerate(gpus) for b in gpus[i + 1:]] if len(gpus) <= 4 else []
        if len(gpus) > 2:
            sets.append(tuple(gpus))
        for chosen in sets:
            free = sum((g.free_bytes or 0) for g in chosen) >> 30
            opts.append((f"split over GPUs {' + '.join(str(g.index) for g in chosen)} (free {free} GiB)",
                         ",".join(g.uuid for g in chosen)))
    return opts


def known_models(loaded: list[ModelRequest]) -> list[ModelRequest]:
    """What the load form offers: the models this server has seen, then every profile's models
    whose folder is here (the shipped demo profile's `demo:NAME` tiny models among them)."""
    from gputui.core.profiles import ProfileError
    from gputui.paths import load_named_profile, profile_names

    out: dict[tuple[str, str, str], ModelRequest] = {}
    for r in loaded:
        out.setdefault((r.name, r.kind, r.path), r)
    for name in profile_names():
        try:
            profile = load_named_profile(name, check_paths=False)
        except (ProfileError, OSError):
            continue  # `gputui profiles` says what is wrong with it
        for m in profile.models:
            if m.path.startswith("demo:") or Path(m.path).is_dir():
                out.setdefault((m.name, m.kind, m.path), m)
    return list(out.values())


class LoadForm(_Form):
    """Returns a ModelRequest, or None. Fits 80x24: one line per field, buttons in a row."""

    def __init__(self, snapshot: Any, known: list[ModelRequest] | None = None) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.known = known or []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Load a model: pick a known one, or give a folder (or demo:NAME)")
            yield Select([(outside(f"{m.name} ({m.kind}) {m.path}"), i) for i, m in enumerate(self.known)],
                         id="known", prompt="known models" if self.known else "no known models: fill in below",
                         compact=True)
            for label, widget in (
                ("name", Input(id="name", placeholder="chatglm3", compact=True)),
                ("kind", Select([(AUTO_KIND, "auto"), *((k, k) for k in kind_names())], id="kind", value="auto",
                                allow_blank=False, compact=True)),
                ("folder", Input(id="path", placeholder="/models/chatglm3-6b  or  demo:chatglm3", compact=True)),
                ("GPU", Select(gpu_options(self.snapshot, splits=True), id="gpu", value="auto", allow_blank=False,
                               compact=True)),
                ("max context", Input(id="ctx", placeholder="tokens (empty: the model's)", type="integer",
                                      compact=True)),
            ):
                with Horizontal(classes="row"):
                    yield Label(label)
                    yield widget
            with Horizontal(classes="buttons"):
                yield Button("Load", id="ok", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id != "known" or not isinstance(event.value, int):
            return
        m = self.known[event.value]
        self.query_one("#name", Input).value = m.name
        self.query_one("#kind", Select).value = m.kind
        self.query_one("#path", Input).value = m.path
        if m.max_context:
            self.query_one("#ctx", Input).value = str(m.max_context)

    def submit(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        path = self.query_one("#path", Input).value.strip()
        if not name or not path:
            self.notify("a name and a folder are needed", severity="error")
            return
        if not NAME_RE.match(name):  # it names files (journals) and rows: no '/', no spaces
            self.notify("the name can have letters, digits, '-', '_' and '.' (up to 64)", severity="error")
            return
        ctx = self.query_one("#ctx", Input).value.strip()
        if ctx and not (ctx.isdigit() and 16 <= int(ctx) <= 1_048_576):
            self.notify("max context is a whole number of tokens from 16 to 1048576", severity="error")
            return
        if not path.startswith("demo:"):
            path = str(Path(path).expanduser())
        kind = str(self.query_one("#kind", Select).value)
        if kind == "auto":
            try:  # config.json's model_type names it (a demo:NAME folder is NAME)
                kind = path.removeprefix("demo:") if path.startswith("demo:") else detect_kind(Path(path))
            except CheckpointError as e:
                self.notify(f"{e}; pick the kind", severity="error")  # shown literally (app.notify)
                return
        chosen = self.query_one("#known", Select).value
        base = self.known[chosen] if isinstance(chosen, int) else None
        if base is not None and (base.name, base.kind, base.path) == (name, kind, path):
            generation, keep = dict(base.generation), base.keep_alive_s  # a profile's settings come along
        else:
            generation, keep = {}, None
        self.dismiss(ModelRequest(name, kind, path, tuple(str(self.query_one("#gpu", Select).value).split(",")),
                                  max_context=int(ctx) if ctx else None, generation=generation, keep_alive_s=keep))


class GpuForm(_Form):
    def __init__(self, snapshot: Any, title: str) -> None:
        super().__init__()
        self.snapshot, self.title_text = snapshot, title

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(outside(self.title_text), markup=False)
            yield Select(gpu_options(self.snapshot)[1:], id="gpu", allow_blank=False)
            yield Button("OK", id="ok", variant="primary")
            yield Button("Cancel", id="cancel")

    def submit(self) -> None:
        self.dismiss(self.query_one("#gpu", Select).value)


class TextForm(_Form):
    def __init__(self, title: str, placeholder: str = "") -> None:
        super().__init__()
        self.title_text, self.placeholder = title, placeholder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(outside(self.title_text), markup=False)
            yield Input(id="text", placeholder=self.placeholder)
            yield Button("OK", id="ok", variant="primary")
            yield Button("Cancel", id="cancel")

    def submit(self) -> None:
        value = self.query_one("#text", Input).value.strip()
        self.dismiss(value or None)


class ConfirmForm(_Form):
    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(outside(self.question, one_line=False), markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Yes", id="ok", variant="error", compact=True)
                yield Button("No (Esc)", id="cancel", compact=True)

    def submit(self) -> None:
        self.dismiss(True)


class QuitForm(_Form):
    """Leaving the dashboard with models loaded in the server: one key decides."""

    BINDINGS = [Binding("escape", "cancel", "Stay"), Binding("l", "choose('leave')", "Leave serving"),
                Binding("u", "choose('stop')", "Unload and stop")]

    def __init__(self, loaded: list[str], demo: bool = False) -> None:
        super().__init__()
        self.loaded = loaded
        self.flag = " --demo" if demo else ""  # the command that finds them: the demo has its own server

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(outside(f"{len(self.loaded)} model(s) are loaded in your gputui server: "
                                f"{', '.join(self.loaded)}", one_line=False), markup=False)
            yield Label(f"Enter / l: leave them serving (stop them later with `gputui stop{self.flag}`)", markup=False)
            yield Label("u: unload them and stop the server      Esc: stay")
            with Horizontal(classes="buttons"):  # one row: the dialog fits an 80x24 terminal whole
                yield Button("Leave serving", id="ok", variant="primary")
                yield Button("Unload and stop", id="stop", variant="error")
                yield Button("Stay", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        # Textual runs _Form's handler after this one by itself (ok, cancel); only "stop" is ours
        if event.button.id == "stop":
            event.prevent_default()
            self.dismiss("stop")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)

    def submit(self) -> None:
        self.dismiss("leave")
