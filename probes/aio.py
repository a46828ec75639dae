"""asyncio helpers shared by the probes' steps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def gather_each(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """``asyncio.gather`` of ``awaitables``, results in order; a single one is awaited in place.

    Most steps of a measurement have one address or one connection: gather would make a task of it
    and wait a round of the event loop for it, a good part of what the step itself costs."""
    pending = list(awaitables)
    if len(pending) == 1:
        return [await pending[0]]
    return list(await asyncio.gather(*pending))
