"""The Textual dashboard: the only package that imports Textual, and it never imports torch.

The dashboard process holds no CUDA context: GPU state comes from `gputui.hardware`, models
live in worker processes that `gputui.scheduler` starts.
"""
