"""One module per suite, each with `async def run(args)` (see bench/__main__.py)."""
