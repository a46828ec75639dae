"""TCP connect: one ``tcp_connect`` entry per address."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

from netlab.capabilities import Capabilities
from netlab.target import Target
from probes.aio import gather_each
from probes.base import Probe
from probes.context import ProbeContext
from probes.dns import resolve_into
from probes.errors import TargetRefused
from probes.failures import failure_string
from probes.safety import ensure_address_allowed, ensure_target_allowed
from probes.streams import TcpStream, endpoint
from probes.trace import Trace


async def connect(
    ip: str, port: int, ctx: ProbeContext, trace: Trace, *, tags: list[str]
) -> tuple[dict[str, Any], TcpStream | None]:
    """Connect to ``ip:port``: the ``tcp_connect`` entry, and the stream when it succeeded.

    The entry's ``transaction_id`` is the connection's: later steps on the stream reuse it.
    """
    transaction_id = trace.new_transaction()
    t0 = trace.now()
    stream: TcpStream | None = None
    failure: str | None = None
    try:
        async with asyncio.timeout(ctx.connect_timeout):
            stream = await TcpStream.connect(ip, port)
    except TargetRefused:
        raise
    except Exception as exc:
        failure = failure_string(exc)
    trace.event("connect", endpoint(ip, port), transaction_id, t0=t0, failure=failure, tags=tags)
    if stream is not None:
        stream.watch(trace, transaction_id, tags)
    entry = {
        "ip": ip,
        "port": port,
        "status": {"failure": failure, "success": failure is None, "blocked": False},
        "t0": t0,
        "t": trace.now(),
        "tags": list(tags),
        "transaction_id": transaction_id,
    }
    return entry, stream


@dataclass
class Connection:
    """An open TCP stream and the transaction id its later TLS and HTTP entries share."""

    stream: TcpStream
    transaction_id: int


async def connect_all(
    addresses: list[str], port: int, ctx: ProbeContext, trace: Trace, *, tags: list[str]
) -> tuple[list[dict[str, Any]], Connection | None]:
    """Connect to every address at once; keep the first success (in address order), close the rest.

    Returns the entries in address order and the kept connection (None when every connect failed).
    """
    results = await connect_each(addresses, port, ctx, trace, tags=tags)
    kept: Connection | None = None
    for _, connection in results:
        if connection is None:
            continue
        if kept is None:
            kept = connection
        else:
            await connection.stream.close()
    return [entry for entry, _ in results], kept


async def connect_each(
    addresses: list[str], port: int, ctx: ProbeContext, trace: Trace, *, tags: list[str]
) -> list[tuple[dict[str, Any], Connection | None]]:
    """Connect to every address at once: each one's entry and open connection (None if it failed),
    in address order. The caller closes the connections."""
    for ip in addresses:  # refuse before sending anything, rather than half-way through
        ensure_address_allowed(ip, "TCP connect")
    results = await gather_each(connect(ip, port, ctx, trace, tags=tags) for ip in addresses)
    return [(entry, None if stream is None else Connection(stream, entry["transaction_id"]))
            for entry, stream in results]


def first_connect_failure(entries: list[dict[str, Any]]) -> str | None:
    """The failure to report when no connect succeeded: the first address's, like a dialer."""
    for entry in entries:
        failure: str | None = entry["status"]["failure"]
        if failure is not None:
            return failure
    return None


class TcpProbe(Probe):
    """Resolve the target (unless given addresses) and connect to each address on its port."""

    name: ClassVar[str] = "tcp"
    version: ClassVar[str] = "0.2.0"
    test_name: ClassVar[str] = "urlgetter"
    capabilities: ClassVar[Capabilities] = Capabilities(stages=("dns", "tcp"))

    def __init__(self, addresses: list[str] | None = None) -> None:
        self.addresses = addresses

    async def run(self, target: Target, ctx: ProbeContext) -> dict[str, Any]:
        ensure_target_allowed(target, ctx)
        trace = Trace()
        keys: dict[str, Any] = {
            "queries": [],
            "tcp_connect": [],
            "failure": None,
            "x_failed_stage": None,
            "x_addresses": [],
            "x_resolved": {"system": [], "public": None},
        }
        if self.addresses is not None:
            addresses = list(self.addresses)
        else:
            addresses = await resolve_into(keys, target, ctx, trace)
            if not addresses:
                return keys
        keys["x_addresses"] = addresses
        entries, connection = await connect_all(addresses, target.port, ctx, trace, tags=[])
        keys["tcp_connect"] = entries
        if connection is None:
            keys["failure"] = first_connect_failure(entries)
            keys["x_failed_stage"] = "tcp"
        else:
            await connection.stream.close()
        return keys
