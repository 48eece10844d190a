"""Other programs use the hosted models: an OpenAI-compatible HTTP API on the per-user server
(app.py: the listener and handlers; openai_format.py: the format both ways, no HTTP in it)."""
