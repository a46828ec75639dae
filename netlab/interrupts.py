"""Ctrl-C and SIGTERM that never leave half a lab behind.

`install()` makes SIGINT and SIGTERM raise KeyboardInterrupt, so every `finally` that tears a lab
down runs, with these guards:

* inside ``deferred()`` (a teardown) the signal is only noted: a second Ctrl-C cannot cut a
  teardown in half; ``raise_if_interrupted()`` raises it once the teardown is done;
* inside ``run_async`` (a campaign's event loop) the signal cancels the main task, as asyncio
  itself does for Ctrl-C, instead of raising KeyboardInterrupt wherever the loop happens to be (in
  a child watcher's callback, that leaves a worker nobody reaps and a run that never ends);
* ``run_to_end(teardown)`` also covers the few steps between a ``finally:`` and the deferral inside
  it: an interrupt landing there is dropped (it stays noted) and the teardown starts again;
* Python swallows a KeyboardInterrupt raised in an at-fork hook (a signal that lands while a
  service or worker is being started); the note survives, and the next ``raise_if_interrupted()``
  between the steps of a command raises it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

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


def run_to_end(teardown: Callable[[], None]) -> None:
    """Run ``teardown`` deferred, to its end, also when a signal lands in the bytecodes between a
    ``finally:`` and the ``deferred()`` inside it: that KeyboardInterrupt is noted, dropped here, and
    the teardown starts (again, if it had not finished). ``raise_if_interrupted()`` raises it later."""
    done = False
    while not done:
        with contextlib.suppress(KeyboardInterrupt), deferred():
            teardown()
            done = True


def raise_if_interrupted() -> None:
    """Between the steps of a long command: an interrupt that was noted still stops it."""
    if _interrupted and not _deferring:
        raise KeyboardInterrupt


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` where SIGINT and SIGTERM cancel ``coro``'s task (its `finally` blocks
    and cancellation handlers run) and then raise KeyboardInterrupt, like any other interrupt."""
    signals = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    previous = {sig: signal.getsignal(sig) for sig in signals}
    with asyncio.Runner() as runner:
        loop = runner.get_loop()
        task = loop.create_task(coro)

        def cancel() -> None:
            global _interrupted
            _interrupted = True
            if not _deferring:
                task.cancel()

        for sig in signals:
            loop.add_signal_handler(sig, cancel)
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if _interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)  # leaves Python's default behind: put back what was there
                signal.signal(sig, previous[sig] if previous[sig] is not None else signal.SIG_DFL)
