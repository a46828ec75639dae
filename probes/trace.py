"""The measurement clock, transaction ids and network events shared by the steps of one measurement."""

from __future__ import annotations

import itertools
import time
from typing import Any

#: Read and write events kept per transaction: enough to cover the TLS handshake and the start of
#: the HTTP exchange (what OONI's pipeline reads: ooni/data measurement_transformer.py counts the
#: reads and writes between ``connect`` and ``tls_handshake_done``), without a 32 MiB body adding
#: thousands of lines.
IO_EVENTS_PER_TRANSACTION = 32


class Trace:
    """Started when a measurement starts.

    ``now()`` gives OONI's ``t0``/``t`` values: float seconds since the measurement started.
    ``new_transaction()`` numbers the operations: one DNS query (with all its responses) is one
    transaction, and so is one connection (its TCP connect, TLS handshake and HTTP request).
    ``network_events`` is OONI's list of the same name (df-008): ``connect``, ``read``, ``write``,
    ``tls_handshake_start`` / ``tls_handshake_done``, ``http_transaction_start`` / ``_done``.
    """

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._ids = itertools.count(1)
        self.network_events: list[dict[str, Any]] = []
        self._io_events: dict[int, int] = {}

    def now(self) -> float:
        return round(time.monotonic() - self._started, 6)

    def new_transaction(self) -> int:
        return next(self._ids)

    def event(self, operation: str, address: str, transaction_id: int, *, t0: float | None = None,
              t: float | None = None,
              failure: str | None = None, num_bytes: int | None = None, tags: list[str] | None = None) -> None:
        """Record one network event (``read``/``write`` ones up to IO_EVENTS_PER_TRANSACTION per
        transaction)."""
        if operation in ("read", "write"):
            seen = self._io_events.get(transaction_id, 0)
            if seen >= IO_EVENTS_PER_TRANSACTION:
                return
            self._io_events[transaction_id] = seen + 1
        t = self.now() if t is None else t
        entry: dict[str, Any] = {"address": address, "failure": failure, "operation": operation, "proto": "tcp",
                                 "t0": t if t0 is None else t0, "t": t, "tags": list(tags or []),
                                 "transaction_id": transaction_id}
        if num_bytes is not None:
            entry["num_bytes"] = num_bytes
        self.network_events.append(entry)
