"""The DNS window in the background: a lookup under ``background_windows`` returns at its first
response, the probe's next step starts at once, late (injected) responses still end up in the test
keys, and the worker's slot goes to the next job while a window is open."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from typing import Any

import pytest
from test_probes_support import (
    LOOPBACK,
    PAGE,
    DnsServer,
    Pki,
    answer,
    http_response,
    injected,
    make_context,
    serve,
    tcp_server,
)

from netlab.target import Target
from probes.dns import DnsProbe, WindowListeners, after_window, background_windows, lookup
from probes.trace import Trace
from probes.web import WebProbe
from probes.worker import Worker

pytestmark = pytest.mark.usefixtures("loopback_only")

WINDOW = 1.0  # long, so that "did not wait for it" is clear under any load


async def run_in_background(coro_fn: Any) -> tuple[Any, float, float]:
    """(the probe's keys after the windows closed, seconds until the probe returned, seconds in all)."""
    t0 = time.monotonic()
    with background_windows() as windows:
        keys = await coro_fn()
        returned = time.monotonic() - t0
        await windows.settle()
    return keys, returned, time.monotonic() - t0


def test_dns_probe_returns_at_the_first_response_and_records_the_late_one(dns_server: DnsServer) -> None:
    ctx = make_context(dns_server.port, dns_window=WINDOW)
    keys, returned, total = asyncio.run(run_in_background(
        lambda: DnsProbe().run(Target.parse("https://injected.test/"), ctx)))
    assert returned < WINDOW / 2
    assert total >= WINDOW  # the window was listened to in full, after the probe returned
    first, second = keys["queries"]
    assert first["answers"][0]["ipv4"] == "10.10.34.34" and second["answers"][0]["ipv4"] == LOOPBACK
    assert first["transaction_id"] == second["transaction_id"]
    assert keys["x_dns_responses"]["system"] == 2
    assert keys["x_resolved"]["system"] == ["10.10.34.34"]
    [lookup_result] = keys["lookups"].values()
    assert len(lookup_result["queries"]) == 2


def test_without_a_background_scope_the_window_is_listened_to_inline(dns_server: DnsServer) -> None:
    ctx = make_context(dns_server.port, dns_window=0.3)

    async def go() -> tuple[int, float]:
        t0 = time.monotonic()
        result = await lookup("injected.test", LOOPBACK, ctx, Trace(), engine="system", tags=[])
        return result.responses, time.monotonic() - t0

    responses, seconds = asyncio.run(go())
    assert responses == 2 and seconds >= 0.3


def test_after_window_runs_at_once_outside_a_scope_and_after_settle_inside() -> None:
    ran: list[str] = []
    after_window(lambda: ran.append("now"))
    assert ran == ["now"]

    async def go() -> None:
        with background_windows() as windows:
            after_window(lambda: ran.append("later"))
            assert ran == ["now"]
            await windows.settle()

    asyncio.run(go())
    assert ran == ["now", "later"]


def test_a_closed_window_leaves_no_reference_cycle(dns_server: DnsServer) -> None:
    """A window's timer holds the context it was made in, and that context the window's listeners:
    a cycle that held each measurement's sockets and lookups until the collector's rare full pass."""
    ctx = make_context(dns_server.port, dns_window=0.05)

    async def measure() -> None:
        for _ in range(3):
            with background_windows() as windows:
                await DnsProbe().run(Target.parse("https://injected.test/"), ctx)
                await windows.settle()

    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        asyncio.run(measure())
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, WindowListeners | asyncio.DatagramTransport | Trace)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []


def test_web_probe_connects_before_the_window_closes(pki: Pki) -> None:
    """An injector that answers with the real address first: the fetch goes on at once, and the
    second response is still in ``queries`` with its count, in the order of the lookups."""
    zone = {"news.test": injected(LOOPBACK, LOOPBACK)}
    with contextlib.closing(DnsServer(zone)) as dns_server, \
            tcp_server(serve(http_response(PAGE), tls=Pki.server_context(pki.valid))) as server:
        ctx = make_context(dns_server.port, ca_file=str(pki.ca_file), public_resolver=LOOPBACK,
                           dns_window=WINDOW)
        keys, returned, total = asyncio.run(run_in_background(
            lambda: WebProbe().run(Target.parse(f"https://news.test:{server.port}/"), ctx)))
    assert keys["x_failed_stage"] is None and keys["x_title"] == "Lab & News Today"
    assert returned < WINDOW / 2 and total >= WINDOW
    assert keys["tcp_connect"][0]["t0"] < WINDOW / 2  # the next step did not wait for the window
    assert [q["engine"] for q in keys["queries"]] == ["system", "system", "udp", "udp"]
    assert keys["x_dns_responses"] == {"system": 2, "public": 2}


class _Sink:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    async def write(self, data: bytes) -> None:
        self.lines.append(json.loads(data))


def test_the_worker_hands_the_slot_on_while_a_window_is_open() -> None:
    """Concurrency 1, three DNS jobs, a window of WINDOW each: with the slot held through the
    window they would take 3 * WINDOW; handed on, about one window."""
    zone = {"injected.test": injected("10.10.34.34", LOOPBACK), "ok.test": answer(LOOPBACK)}
    with contextlib.closing(DnsServer(zone)) as dns_server:
        ctx = make_context(dns_server.port, dns_window=WINDOW)

        async def go() -> tuple[list[dict[str, Any]], float]:
            sink = _Sink()
            worker = Worker(ctx, 1, 30.0, sink)  # type: ignore[arg-type]
            lines: asyncio.Queue[str | None] = asyncio.Queue()
            for i, host in enumerate(["injected.test", "ok.test", "injected.test"]):
                lines.put_nowait(json.dumps({"id": i, "probe": "dns", "url": f"https://{host}/"}) + "\n")
            lines.put_nowait(None)
            t0 = time.monotonic()
            await asyncio.wait_for(worker.serve(lines), 30)
            return sink.lines, time.monotonic() - t0

        results, seconds = asyncio.run(go())
    assert seconds < 2 * WINDOW
    by_id = {r["id"]: r["measurement"]["test_keys"] for r in results}
    assert [by_id[i]["x_dns_responses"]["system"] for i in range(3)] == [2, 1, 2]
    assert [len(by_id[i]["queries"]) for i in range(3)] == [2, 1, 2]
