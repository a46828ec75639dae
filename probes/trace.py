"""The measurement clock and transaction ids shared by the steps of one measurement."""

from __future__ import annotations

import itertools
import time


class Trace:
    """Started when a measurement starts.

    ``now()`` gives OONI's ``t0``/``t`` values: float seconds since the measurement started.
    ``new_transaction()`` numbers the operations: one DNS query (with all its responses) is one
    transaction, and so is one connection (its TCP connect, TLS handshake and HTTP request).
    """

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._ids = itertools.count(1)

    def now(self) -> float:
        return round(time.monotonic() - self._started, 6)

    def new_transaction(self) -> int:
        return next(self._ids)
