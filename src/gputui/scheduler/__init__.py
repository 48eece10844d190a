"""The embedded scheduler: one asyncio loop that loads, moves and unloads models one command
at a time, while chat to ready models goes on. Imports neither Textual nor torch."""

from gputui.scheduler.scheduler import ModelRecord, Scheduler

__all__ = ["Scheduler", "ModelRecord"]
