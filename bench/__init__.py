"""gputui's benchmarks, one runner: `python -m bench SUITE... [--root DIR]` (see __main__.py)."""
