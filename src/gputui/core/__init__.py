"""Pure logic and plain data: standard library only, no Textual, torch or pynvml.

Everything the dashboard, the scheduler and the worker agree on lives here, so each of
them can be tested without the others.
"""
