"""The worker side: what runs inside a model's own process. Never imports Textual.

`python -m gputui.worker` starts one. It imports torch and transformers at once (so a spare
worker can wait, warm, for its next model), then follows the parent's commands on stdin and
answers on its original stdout, one JSON line per message.
"""
