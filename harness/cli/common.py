"""What the verbs share: the console, exit codes, and common options."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from types import FrameType

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


_interrupted = False


def _on_interrupt(_signum: int, _frame: FrameType | None) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def install_interrupt_handlers() -> None:
    """SIGINT and SIGTERM unwind like Ctrl-C, so every `finally` that tears a lab down runs. The
    flag catches the one case where Python swallows the KeyboardInterrupt (a signal that lands in
    an at-fork hook while a service or worker is being started): see ``raise_if_interrupted``."""
    signal.signal(signal.SIGINT, _on_interrupt)
    signal.signal(signal.SIGTERM, _on_interrupt)
    sys.unraisablehook = _quiet_swallowed_interrupt


def _quiet_swallowed_interrupt(unraisable: sys.UnraisableHookArgs) -> None:
    # No traceback for the swallowed KeyboardInterrupt: the flag re-raises it at the next step.
    if not (_interrupted and issubclass(unraisable.exc_type, KeyboardInterrupt)):
        sys.__unraisablehook__(unraisable)


def raise_if_interrupted() -> None:
    """Called between the steps of a long command: an interrupt that was swallowed still stops it."""
    if _interrupted:
        raise KeyboardInterrupt
