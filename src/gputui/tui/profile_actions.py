"""Profiles from the dashboard: apply one (its models load in order through the client; each
step arrives as a profile_step event and a toast), or save the current placement as one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial

from textual.app import App

from gputui.api.client import CommandRefused
from gputui.core.profiles import ProfileError, save_profile, save_target
from gputui.core.requests import for_the_dashboard
from gputui.paths import load_named_profile, profile_names, user_profiles_dir
from gputui.tui.controller import ModelController


class ProfileActions:
    def __init__(self, app: App[None], controller: ModelController) -> None:
        self.app, self.controller = app, controller

    def _run(self, work: Callable[[], Awaitable[None]], name: str, exclusive: bool = False) -> None:
        # a function, not a coroutine: an exclusive worker replaced before it starts never awaits it
        self.app.run_worker(work, group="profile", exclusive=exclusive, exit_on_error=False, name=name)

    @staticmethod
    def names() -> list[str]:
        return profile_names()

    def apply(self, name: str) -> None:
        self._run(partial(self._apply, name), "apply profile", exclusive=True)

    async def _apply(self, name: str) -> None:
        if not self.controller.usable() or self.controller.client is None:
            return
        try:
            profile = load_named_profile(name)
        except ProfileError as e:
            self.app.notify(str(e), severity="error", timeout=12)
            return
        self.app.notify(f"applying profile {profile.name}")
        profile = replace(profile, models=tuple(for_the_dashboard(m) for m in profile.models))
        await self.controller.client.apply_profile(profile)  # each step arrives as a profile_step event

    def save(self, name: str) -> None:
        self._run(partial(self._save, name), "save profile")

    async def _save(self, name: str) -> None:
        client = self.controller.client
        if client is None:
            return
        try:
            stem, path = save_target(name, user_profiles_dir())
            profile = await client.current_profile(stem)
            await asyncio.to_thread(save_profile, profile, path)
        except (ProfileError, CommandRefused, OSError) as e:
            self.app.notify(f"not saved: {e}", severity="error")
            return
        self.app.notify(f"saved to {path}")
