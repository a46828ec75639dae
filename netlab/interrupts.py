"""Ctrl-C and SIGTERM that never leave half a lab behind.

`install()` makes SIGINT and SIGTERM raise KeyboardInterrupt, so every `finally` that tears a lab
down runs, with two guards:

* inside ``deferred()`` (a teardown) the signal is only noted: a second Ctrl-C cannot cut a
  teardown in half; ``raise_if_interrupted()`` raises it once the teardown is done;
* Python swallows a KeyboardInterrupt raised in an at-fork hook (a signal that lands while a
  service or worker is being started); the note survives, and the next ``raise_if_interrupted()``
  between the steps of a command raises it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType

_interrupted = False
_deferring = 0


def _on_signal(_signum: int, _frame: FrameType | None) -> None:
    global _interrupted
    _interrupted = True
    if not _deferring:
        raise KeyboardInterrupt


def install() -> None:
    """Make SIGINT and SIGTERM interrupt (main thread only, as Python's signal handlers are)."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    sys.unraisablehook = _quiet_swallowed_interrupt


def _quiet_swallowed_interrupt(unraisable: sys.UnraisableHookArgs) -> None:
    # No traceback for the swallowed KeyboardInterrupt: the note re-raises it at the next step.
    if not (_interrupted and issubclass(unraisable.exc_type, KeyboardInterrupt)):
        sys.__unraisablehook__(unraisable)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Run a block (a teardown) that an interrupt must not cut short."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1


def interrupted() -> bool:
    return _interrupted


def raise_if_interrupted() -> None:
    """Between the steps of a long command: an interrupt that was noted still stops it."""
    if _interrupted and not _deferring:
        raise KeyboardInterrupt
