"""q with models loaded in the user's server: ask once - leave them serving (the default) or
unload them and stop the server. Without a server's models, q just quits. In a form q is nothing
(Esc closes it): a list or a button there does not take letters, and a stray q must not end the app."""

from __future__ import annotations

import asyncio
import signal

from textual.app import App
from textual.screen import ModalScreen

from gputui.api.client import Client, ServerClient
from gputui.tui.controller import ModelController
from gputui.tui.screens.forms import QuitForm


def quit_or_ask(app: App[None], controller: ModelController, *, attached: bool, demo: bool) -> None:
    if isinstance(app.screen, ModalScreen):
        return
    loaded = [v.name for v in controller.models() if v.ready] if attached else []
    if not loaded or controller.client is None:
        app.exit()
        return
    client = controller.client

    def chosen(choice: str | None) -> None:
        if choice == "leave":
            app.exit()
        elif choice == "stop":
            app.run_worker(_stop_server_and_exit(app, client, loaded), group="quit", exit_on_error=False,
                           name="stop the server")

    app.push_screen(QuitForm(loaded, demo=demo), chosen)


async def _stop_server_and_exit(app: App[None], client: Client, loaded: list[str]) -> None:
    for name in loaded:
        await client.unload(name)
    if isinstance(client, ServerClient):  # the embedded scheduler has no server to stop
        await client.shutdown()
    app.exit()


def exit_on_signals(app: App[None]) -> None:
    """SIGTERM and SIGHUP (the terminal gone) exit as q does, so the terminal gets its screen back
    (no alternate screen or mouse reporting left on) and the models are unloaded, not orphaned."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        asyncio.get_running_loop().add_signal_handler(sig, app.exit)
