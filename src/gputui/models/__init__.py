"""Model runtimes for the worker side: loaders, tokenizers and chat adapters.

These import torch and transformers and run inside worker processes (and in scripts that use
the public API, e.g. `from gputui.models.glm.chatglm3 import load_chatglm3`). The dashboard and the
scheduler never import this package.
"""
