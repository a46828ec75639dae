"""What the verbs share: the console, exit codes, and common options."""

from __future__ import annotations

import argparse
import os
import shutil

from rich.console import Console

from netlab.names import LAB_NAME_RULE, lab_name_problem

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


def lab_name(text: str) -> str:
    """An argparse type: a valid lab name, or a usage error (exit 2) before anything starts."""
    problem = lab_name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def add_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", type=lab_name, help="lab name (default: the scenario's name; "
                   f"{LAB_NAME_RULE}); run several labs at once by giving each its own")

