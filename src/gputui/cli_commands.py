"""Subcommands beyond `status`: registered here so cli.py stays small."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_subcommands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    pass


def dispatch(args: argparse.Namespace) -> int:
    raise SystemExit(f"unknown command {args.command}")
