"""gputui: a terminal dashboard and scheduler for hosting models side by side on shared GPUs."""

__version__ = "0.1.0"
