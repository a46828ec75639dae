"""netlab.interrupts.run_to_end: a teardown runs to its end whatever interrupt lands around it."""

from __future__ import annotations

import os
import signal

import pytest

from netlab import interrupts


@pytest.fixture
def installed():  # type: ignore[no-untyped-def]
    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    interrupts.install()
    interrupts._interrupted = False
    yield
    interrupts._interrupted = False
    signal.signal(signal.SIGINT, old[0])
    signal.signal(signal.SIGTERM, old[1])


def test_an_interrupt_before_the_deferral_starts_the_teardown_again(installed) -> None:  # type: ignore[no-untyped-def]
    calls = []

    def teardown() -> None:
        calls.append("start")
        if len(calls) == 1:
            raise KeyboardInterrupt  # as the signal handler does where nothing is deferred yet
        calls.append("done")

    interrupts.run_to_end(teardown)
    assert calls == ["start", "start", "done"]


def test_a_signal_during_the_teardown_is_noted_and_raised_after_it(installed) -> None:  # type: ignore[no-untyped-def]
    calls = []

    def teardown() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside the deferral: only noted
        calls.append("done")

    interrupts.run_to_end(teardown)
    assert calls == ["done"]
    with pytest.raises(KeyboardInterrupt):
        interrupts.raise_if_interrupted()


def test_a_failing_teardown_is_not_retried(installed) -> None:  # type: ignore[no-untyped-def]
    calls = []

    def teardown() -> None:
        calls.append("start")
        raise OSError("gone")

    with pytest.raises(OSError):
        interrupts.run_to_end(teardown)
    assert calls == ["start"]
