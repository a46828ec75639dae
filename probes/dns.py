"""DNS: resolve a target's A record over UDP, recording every response that arrives.

An on-path injector answers faster than the real resolver, so a censored query often gets two
responses: the forged one first, the real one a little later. A normal stub resolver keeps
only the first; this one keeps the socket open for ``ctx.dns_window`` after the first response
and records each response as its own ``queries`` entry, all with the query's transaction_id,
in order of arrival (OONI's ``x_dns_duplicate_responses`` idea, kept in ``queries`` itself).

Listening must not cost a measurement its speed: inside ``background_windows()`` (the probe
worker opens one per job) a lookup returns at its first response and goes on listening in a task
of its own, so the probe's next step (TCP, TLS, HTTP) starts at once; late responses are added to
the lookup's ``entries`` (in place) and ``responses``. Code that copies a lookup's entries into
its test keys does it in ``after_window(...)``, which runs once every window of the measurement
has closed (at once when there is no background scope: the lookups then listened inline). The
worker releases the job's slot when the probe returns and waits for the windows after that.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import dns.exception
import dns.message
import dns.rdatatype

from netlab.capabilities import Capabilities
from netlab.target import Target, host_is_ip
from probes.base import Probe
from probes.context import ProbeContext
from probes.failures import dns_rcode_failure, failure_string
from probes.safety import ensure_address_allowed, ensure_target_allowed
from probes.trace import Trace

#: Stop collecting after this many responses to one query, whatever arrives.
MAX_RESPONSES = 16


@dataclass
class DnsLookup:
    """Outcome of one query: every ``queries`` entry, and what a stub resolver would have used."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    #: Addresses from the FIRST response (the one a normal client acts on): IPv4 ones, then (dual
    #: stack, lookup_both) IPv6 ones from the AAAA query's first response.
    addresses: list[str] = field(default_factory=list)
    #: Failure of the first response (or of the query, when nothing arrived).
    failure: str | None = None
    #: How many responses arrived for the query.
    responses: int = 0


class WindowListeners:
    """One measurement's lookups still listening after their first response (each socket is closed
    by a timer at the end of its window), and what to do once all have closed (``after_window``)."""

    def __init__(self) -> None:
        self._open: list[tuple[asyncio.Future[None], asyncio.TimerHandle, Callable[[], None]]] = []
        self._then: list[Callable[[], None]] = []

    def hold(self, transport: asyncio.BaseTransport, deadline: float) -> None:
        """Keep ``transport`` open (its protocol records what still arrives) until ``deadline``, in
        event-loop time."""
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()

        def close() -> None:
            transport.close()
            if not closed.done():
                closed.set_result(None)

        self._open.append((closed, loop.call_at(deadline, close), close))

    def then(self, fill: Callable[[], None]) -> None:
        self._then.append(fill)

    async def settle(self) -> None:
        """Wait until every window has closed, then run what was deferred, in order."""
        if self._open:
            await asyncio.gather(*(closed for closed, _, _ in self._open))
        then, self._then = self._then, []
        for fill in then:
            fill()

    def cancel(self) -> None:
        # Forget the timers too: each holds the context it was made in, and that context holds
        # this object (_WINDOWS), a reference cycle that kept the sockets, the lookups and their
        # trace until the collector's rare full pass (netlab.gc_policy): a worker's RSS crept up.
        opened, self._open = self._open, []
        for _, timer, close in opened:
            timer.cancel()
            close()


_WINDOWS: contextvars.ContextVar[WindowListeners | None] = contextvars.ContextVar("dns_windows", default=None)


@contextlib.contextmanager
def background_windows() -> Iterator[WindowListeners]:
    """Lookups made in this block (in this task and the tasks it starts) listen for late responses
    in the background. Await ``settle()`` before using their results; leaving the block stops any
    listener still running (a measurement that failed or timed out)."""
    windows = WindowListeners()
    token = _WINDOWS.set(windows)
    try:
        yield windows
    finally:
        _WINDOWS.reset(token)
        windows.cancel()


def after_window(fill: Callable[[], None]) -> None:
    """Run ``fill`` once every DNS window of this measurement has closed: the place to copy
    lookups' ``entries`` and ``responses`` into test keys. At once outside ``background_windows``."""
    windows = _WINDOWS.get()
    if windows is None:
        fill()
    else:
        windows.then(fill)


class _Collector(asyncio.DatagramProtocol):
    """Queues every datagram (with its arrival time) and every socket error; once ``record_late`` is
    set (the rest of the window, listened to in the background), hands datagrams to it instead."""

    def __init__(self, trace: Trace) -> None:
        self._trace = trace
        self.queue: asyncio.Queue[tuple[bytes, float] | Exception] = asyncio.Queue()
        self.record_late: Callable[[bytes, float], object] | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.record_late is not None:
            self.record_late(data, self._trace.now())
        else:
            self.queue.put_nowait((data, self._trace.now()))

    def error_received(self, exc: Exception) -> None:
        # E.g. ConnectionRefusedError from an ICMP port unreachable.
        self.queue.put_nowait(exc)


async def lookup(
    hostname: str,
    resolver_ip: str,
    ctx: ProbeContext,
    trace: Trace,
    *,
    engine: str,
    tags: list[str],
    qtype: str = "A",
    into: DnsLookup | None = None,
) -> DnsLookup:
    """Send one ``qtype`` (A or AAAA) query for ``hostname`` to ``resolver_ip`` and record every
    response; ``into``: add the entries to that lookup's (lookup_both), its addresses after its own."""
    ensure_address_allowed(resolver_ip, "DNS resolver")
    port = ctx.dns_port
    resolver_address = f"[{resolver_ip}]:{port}" if ":" in resolver_ip else f"{resolver_ip}:{port}"
    transaction_id = trace.new_transaction()
    query = dns.message.make_query(hostname, dns.rdatatype.from_text(qtype))
    # The entries list is shared with ``into``: late (injected) responses land there too.
    result = DnsLookup(entries=into.entries if into is not None else [])

    def entry(t0: float, t: float, failure: str | None, response: _Response | None,
              raw: bytes | None) -> dict[str, Any]:
        return {
            "answers": response.answers if response is not None else [],
            "engine": engine,
            "failure": failure,
            "hostname": hostname,
            "query_type": qtype,
            "raw_response": base64.b64encode(raw).decode("ascii") if raw is not None else None,
            "rcode": response.rcode if response is not None else None,
            "resolver_address": resolver_address,
            "resolver_hostname": None,
            "resolver_port": None,
            "t0": t0,
            "t": t,
            "tags": list(tags),
            "transaction_id": transaction_id,
        }

    loop = asyncio.get_running_loop()
    t0 = trace.now()
    transport = None
    try:
        # A connected UDP socket: the kernel drops datagrams from any other source, while an
        # injector spoofing the resolver's address still gets through (that is what we want).
        transport, collector = await loop.create_datagram_endpoint(
            lambda: _Collector(trace), remote_addr=(resolver_ip, port)
        )
        transport.sendto(query.to_wire())
        first_error = await _collect(collector, query, result, loop.time() + ctx.dns_timeout, ctx.dns_window,
                                     entry, t0, stop_at_first=_WINDOWS.get() is not None)
        if result.responses == 0:
            # Nothing answered: a timeout, unless the socket reported why (e.g. port unreachable).
            result.failure = failure_string(first_error or TimeoutError())
            result.entries.append(entry(t0, trace.now(), result.failure, None, None))
        elif result.responses < MAX_RESPONSES and ctx.dns_window > 0 and (windows := _WINDOWS.get()) is not None:
            # The rest of the window is listened to in the background: what arrives is recorded as
            # it comes, and a timer closes the socket (no task, no wakeup when nothing comes).
            def record_late(data: bytes, arrived: float) -> None:
                if result.responses < MAX_RESPONSES:
                    _record(result, query, data, arrived, entry, t0)

            while not collector.queue.empty():  # what came in with the first response
                item = collector.queue.get_nowait()
                if not isinstance(item, Exception):
                    record_late(*item)
            collector.record_late = record_late
            windows.hold(transport, loop.time() + ctx.dns_window)
            transport = None
    except OSError as exc:  # e.g. network unreachable when sending
        result.failure = failure_string(exc)
        result.entries.append(entry(t0, trace.now(), result.failure, None, None))
    finally:
        if transport is not None:
            transport.close()
    return result


async def _collect(collector: _Collector, query: dns.message.Message, result: DnsLookup, deadline: float,
                   window: float, entry: Callable[..., dict[str, Any]], t0: float, *,
                   stop_at_first: bool) -> Exception | None:
    """Record responses into ``result`` until ``deadline`` (moved to ``window`` after the first
    response), MAX_RESPONSES, or, with ``stop_at_first``, the first response. The socket error
    that came before any response, if one did."""
    loop = asyncio.get_running_loop()
    while result.responses < MAX_RESPONSES:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            # asyncio.timeout, not wait_for: no task per wait, and none at all for a queued item.
            async with asyncio.timeout(remaining):
                item = await collector.queue.get()
        except TimeoutError:
            break
        if isinstance(item, Exception):
            if result.responses == 0:
                return item
            continue  # an error after a response changes nothing about that response
        if not _record(result, query, *item, entry, t0):
            continue  # not an answer to our query (garbage, wrong id or question)
        if result.responses == 1:
            deadline = loop.time() + window
            if stop_at_first:
                break
    return None


def _record(result: DnsLookup, query: dns.message.Message, data: bytes, arrived: float,
            entry: Callable[..., dict[str, Any]], t0: float) -> bool:
    """Record ``data`` as a response of ``result`` (the first one decides its addresses and
    failure); False when it is no answer to ``query``."""
    message = _parse_response(query, data)
    if message is None:
        return False
    response = _Response.of(message)
    if result.responses == 0:
        result.addresses = response.addresses
        result.failure = response.failure
    result.responses += 1
    result.entries.append(entry(t0, arrived, response.failure, response, data))
    return True


async def resolve_target(target: Target, ctx: ProbeContext, trace: Trace, *, tags: list[str]) -> DnsLookup:
    """Addresses for the target via the vantage's resolver; an IP-literal host needs no lookup."""
    if host_is_ip(target.host):
        return DnsLookup(addresses=[target.host])
    return await lookup_both(target.host, ctx.resolver, ctx, trace, engine="system", tags=tags)


async def lookup_both(hostname: str, resolver_ip: str, ctx: ProbeContext, trace: Trace, *, engine: str,
                      tags: list[str]) -> DnsLookup:
    """The A query (``lookup``), and in a dual-stack lab (``ctx.ipv6``) then the AAAA query, as
    OONI's resolvers ask both: one lookup whose entries are both queries' (A first, each with its
    transaction id) and whose addresses are the IPv4 ones then the IPv6 ones. The failure is the A
    query's; an empty AAAA answer (a censor's resolver forging A only) is no failure of the lookup."""
    result = await lookup(hostname, resolver_ip, ctx, trace, engine=engine, tags=tags)
    if not ctx.ipv6:
        return result
    # After the A query's first response, so that entry comes first (the analysis reads it first).
    v6 = await lookup(hostname, resolver_ip, ctx, trace, engine=engine, tags=tags, qtype="AAAA", into=result)
    result.addresses = result.addresses + v6.addresses
    if result.addresses and result.failure == "dns_no_answer":
        result.failure = None  # no A record, yet AAAA records: the name has addresses
    return result


async def resolve_into(keys: dict[str, Any], target: Target, ctx: ProbeContext, trace: Trace) -> list[str]:
    """The single-stage probes' first step (tcp, tls, quic): resolve the target with the vantage's
    resolver and record it in ``keys`` (queries, x_resolved, x_addresses); no address is the
    measurement's failure at the dns stage. The addresses, or [] when the measurement ends here."""
    resolved = await resolve_target(target, ctx, trace, tags=[])
    keys["queries"] = resolved.entries
    keys["x_resolved"]["system"] = resolved.addresses
    if not resolved.addresses:
        keys["failure"] = resolved.failure or "dns_no_answer"
        keys["x_failed_stage"] = "dns"
        return []
    keys["x_addresses"] = resolved.addresses
    return resolved.addresses


def _parse_response(query: dns.message.Message, data: bytes) -> dns.message.Message | None:
    try:
        response = dns.message.from_wire(data)
    except Exception:  # dnspython raises many kinds for malformed packets
        return None
    if not query.is_response(response):
        return None
    return response


@dataclass(frozen=True)
class _Response:
    """What a lookup and its ``queries`` entry take from one response, read once (its CNAME chain
    is resolved once for the addresses and the answers)."""

    rcode: int
    addresses: list[str]
    failure: str | None
    answers: list[dict[str, Any]]

    @classmethod
    def of(cls, response: dns.message.Message) -> _Response:
        rcode = response.rcode()
        chain = _chain(response)
        addresses = _addresses(response, chain)
        # NOERROR without an address record gives dns_no_answer.
        failure = None if rcode == 0 and addresses else dns_rcode_failure(rcode)
        return cls(rcode, addresses, failure, _answers(response, chain))


def _chain(response: dns.message.Message) -> dns.message.ChainingResult | None:
    """The answer for the name asked, through its CNAME chain (dnspython follows it from the
    question, so records for other names in the answer section are not taken), or None when the
    response has no usable chain (too long, or NXDOMAIN yet with an answer)."""
    if not isinstance(response, dns.message.QueryMessage):  # an answer to another opcode: no chain
        return None
    try:
        return response.resolve_chaining()
    except dns.exception.DNSException:
        return None


def _addresses(response: dns.message.Message, chain: dns.message.ChainingResult | None) -> list[str]:
    """The addresses of the type asked (A or AAAA) for the name asked, through its CNAME chain
    (``chain``: the response's ``_chain``)."""
    if chain is None or chain.answer is None or chain.answer.rdtype != response.question[0].rdtype:
        return []
    return [rdata.address for rdata in chain.answer]


def _answers(response: dns.message.Message, chain: dns.message.ChainingResult | None) -> list[dict[str, Any]]:
    """The answer section as OONI writes it: the addresses, then one CNAME answer whose hostname is
    the canonical name the chain ends at (with its trailing dot), when the name asked is an alias
    (``chain``: the response's ``_chain``)."""
    answers: list[dict[str, Any]] = []
    for rrset in response.answer:
        for rdata in rrset:
            if rrset.rdtype == dns.rdatatype.A:
                answers.append({"answer_type": "A", "ipv4": rdata.address, "ttl": rrset.ttl})
            elif rrset.rdtype == dns.rdatatype.AAAA:
                answers.append({"answer_type": "AAAA", "ipv6": rdata.address, "ttl": rrset.ttl})
    if chain is not None and chain.cnames:
        answers.append({"answer_type": "CNAME", "hostname": chain.canonical_name.to_text(),
                        "ttl": chain.cnames[-1].ttl})
    return answers


class DnsProbe(Probe):
    """Resolve the target's name with the vantage's resolver and, concurrently, the public one."""

    name: ClassVar[str] = "dns"
    version: ClassVar[str] = "0.2.0"
    test_name: ClassVar[str] = "dnscheck"
    capabilities: ClassVar[Capabilities] = Capabilities(stages=("dns",), public_dns=True)

    async def run(self, target: Target, ctx: ProbeContext) -> dict[str, Any]:
        ensure_target_allowed(target, ctx)
        trace = Trace()
        keys: dict[str, Any] = {
            "queries": [],
            "dns_experiment_failure": None,
            "failure": None,
            "x_failed_stage": None,
            "x_public_failure": None,
            "x_resolved": {"system": [], "public": None},
            "x_dns_responses": {"system": 0},
        }
        if host_is_ip(target.host):
            keys["x_resolved"]["system"] = [target.host]
            return keys
        # Check both resolvers before sending anything, so a refusal leaves no half-done work.
        ensure_address_allowed(ctx.resolver, "DNS resolver")
        if ctx.public_resolver:
            ensure_address_allowed(ctx.public_resolver, "public DNS resolver")
        lookups = [lookup_both(target.host, ctx.resolver, ctx, trace, engine="system", tags=[])]
        if ctx.public_resolver:
            lookups.append(lookup_both(target.host, ctx.public_resolver, ctx, trace, engine="udp", tags=[]))
        results = await asyncio.gather(*lookups)

        system = results[0]
        keys["dns_experiment_failure"] = system.failure
        keys["x_resolved"]["system"] = system.addresses
        if not system.addresses:
            # The vantage's resolver gave nothing to connect to: the stage a fetch would stop at.
            keys["failure"], keys["x_failed_stage"] = system.failure or "dns_no_answer", "dns"
        if len(results) > 1:
            keys["x_public_failure"] = results[1].failure
            keys["x_resolved"]["public"] = results[1].addresses

        def record_responses() -> None:  # every response, once the windows have closed
            for r, name in zip(results, ("system", "public"), strict=False):
                keys["queries"].extend(r.entries)
                keys["x_dns_responses"][name] = r.responses

        after_window(record_responses)
        # OONI's dnscheck shape: one urlgetter-style result per resolver URL, under `lookups`
        # (no bootstrap: the lab's resolvers are addresses, not names).
        keys["bootstrap"] = None
        keys["bootstrap_failure"] = None
        keys["lookups"] = {
            f"udp://{ip}:{ctx.dns_port}": {"agent": "redirect", "failure": r.failure, "queries": r.entries,
                                           "network_events": [], "requests": [], "tcp_connect": [],
                                           "tls_handshakes": [], "socksproxy": None}
            for ip, r in zip([ctx.resolver, ctx.public_resolver], results, strict=False)}
        return keys
