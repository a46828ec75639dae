"""What the verbs share: the console, exit codes, and common options."""

from __future__ import annotations

import argparse
import os
import shutil

from rich.console import Console

EXIT_OK, EXIT_MISMATCH, EXIT_CONFIG, EXIT_LAB = 0, 1, 2, 3


def console() -> Console:
    # Not a terminal (CI logs, pipes): wide enough for the verdict table and confusion matrix.
    width = shutil.get_terminal_size((160, 40)).columns
    return Console(highlight=False, soft_wrap=False, width=max(width, 100) if not os.isatty(1) else None)


def stderr_console() -> Console:
    """Progress and messages when stdout carries JSON."""
    return Console(stderr=True, highlight=False, soft_wrap=False)


def quiet_default() -> bool:
    """Progress bars are noise in CI logs: quiet by default when CI=true."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="netns", choices=("netns", "compose"),
                   help="where the lab runs: Linux network namespaces (default) or Docker containers")


def add_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="lab name (default: the scenario's name); run several labs at once "
                   "by giving each its own")
