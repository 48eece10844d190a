"""BLIP2 (OPT): the runtime, its OPT decode graph, and image reading."""
