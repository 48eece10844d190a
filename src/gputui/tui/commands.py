"""Command palette entries: load / unload / move / reload / chat / profiles / doctor.

Titles and help lines carry outside text (profile file names, past conversations' file
names, other processes' command lines, error text), and Textual parses a plain-string title or
help line as markup: so each hit is a rich Text, highlighted here, and never parsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, cast

from rich.text import Text
from textual.command import DiscoveryHit, Hit, Hits, Provider

from gputui.tui.host import DashboardHost
from gputui.tui.messages import ApplyProfile, OpenChat, ReopenChat
from gputui.tui.outside import outside


class ModelCommands(Provider):
    def _commands(self) -> list[tuple[str, Any, str]]:
        app = cast(DashboardHost, self.app)
        ctl = app.controller
        out: list[tuple[str, Any, str]] = [
            ("Load a model…", app.dashboard.action_load, "load a model folder on a GPU"),
            ("Doctor: check this machine", app.dashboard.action_doctor, "CUDA / cuBLAS checks"),
            ("Save placement as profile…", app.dashboard.action_save_profile, "write the loaded models to a profile"),
        ]
        for gpu, pid, p in ctl.my_processes(app.snapshot):
            out.append((f"End my process {pid} on GPU {gpu} ({(p.used_bytes or 0) >> 20} MiB)",
                        partial(app.dashboard.confirm_end_process, pid, p), (p.command or "")[:60]))
        if ctl.client is not None:
            from gputui.journal import list_conversations, read_meta

            ready = set(ctl.ready_models())
            for path in list_conversations()[:10]:
                meta = read_meta(path)  # the first line only: this runs on every keystroke
                if meta.get("model") in ready:
                    out.append((f"Reopen conversation {path.stem}", partial(self.app.post_message, ReopenChat(path)),
                                f"continue with {meta.get('model')}"))
        for name in app.profiles.names():
            out.append((f"Apply profile {name}", partial(self.app.post_message, ApplyProfile(name)), "load its models in order"))
        snap = app.snapshot
        for view in ctl.models():
            if view.ready:
                out.append((f"Chat with {view.name}", partial(self.app.post_message, OpenChat(view.name)), "open a chat"))
                out.append((f"Unload {view.name}", partial(ctl.unload, view.name), "end its worker"))
                for g in (snap.gpus if snap else ()):
                    if view.gpus and g.uuid not in view.uuids:
                        out.append((f"Move {view.name} to GPU {g.index}", partial(ctl.move, view.name, g.uuid),
                                    "load on the target, then free the source"))
            elif view.state.resting:
                out.append((f"Reload {view.name}", partial(ctl.reload, view.name), view.error or view.state.value))
        return out

    async def discover(self) -> Hits:
        for title, cb, help_text in self._commands():
            yield DiscoveryHit(_prompt(title, help_text), cb, text=title)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, cb, help_text in self._commands():
            score = matcher.match(title)
            if score > 0:
                _, offsets = matcher.fuzzy_search.match(matcher.query, title)
                yield Hit(score, _prompt(title, help_text, offsets), cb, text=title)


def _prompt(title: str, help_text: str, matched: Sequence[int] = ()) -> Text:
    """Title (matched letters underlined) and a dim help line, as one Text: nothing parsed."""
    prompt = outside(title)
    for i in matched:
        if i < len(prompt.plain):
            prompt.stylize("bold underline", i, i + 1)
    if help_text:
        prompt.append("\n")
        prompt.append(outside(help_text, style="dim"))
    return prompt
