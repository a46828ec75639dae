"""HTTP/1.1 GET over an already established (plain or TLS) connection, and the full fetch chain.

The HTTP protocol work is httpcore's ``AsyncHTTP11Connection``; the probe hands it the
connection through ``HttpcoreStream``, a small adapter from our byte streams to
``httpcore.AsyncNetworkStream``. That adapter is the I/O seam: httpcore never opens sockets or
resolves names itself, so it cannot bypass the probes' safety checks. ``fetch_chain`` follows
redirects only when asked (the web probe); each hop is measured from DNS up.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import re
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit

import httpcore

from netlab.capabilities import STAGES, Capabilities
from netlab.target import Target, host_is_ip, is_loopback
from probes.aio import gather_each
from probes.base import Probe
from probes.context import ProbeContext
from probes.dns import DnsLookup, after_window, lookup_both, resolve_target
from probes.errors import TargetRefused
from probes.failures import DNS_BOGON, failure_string
from probes.redirects import TOO_MANY, location_of, next_target
from probes.safety import ensure_address_allowed, ensure_target_allowed
from probes.streams import ByteStream, TlsStream
from probes.tcp import Connection, connect_each, first_connect_failure
from probes.tls import handshake
from probes.trace import Trace

#: Ports that the Host header leaves implicit.
DEFAULT_PORTS = {"http": 80, "https": 443}
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) fauxisp/0.1"
ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

_TITLE = re.compile(rb"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)


class HttpcoreStream(httpcore.AsyncNetworkStream):
    """Lets httpcore read and write one of our byte streams.

    Errors are wrapped the way httpcore's own backends wrap them (``ReadError`` from the
    ``OSError``, ...) so httpcore behaves as usual -- e.g. it ignores a failed request write and
    still reads the response -- and the original error stays available as ``__cause__``
    for ``failure_string``.
    """

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._stream.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            if not buffer:
                # httpcore's b"" at the end of a bodiless request sends nothing: no timer of its own
                # (a timer per write is a good part of a request's cost; fetch caps the exchange).
                await self._stream.write(buffer)
                return
            async with asyncio.timeout(timeout):
                await self._stream.write(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        await self._stream.close()

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        raise NotImplementedError("TLS is set up by probes.tls before HTTP starts")

    def get_extra_info(self, info: str) -> Any:
        return None


@dataclass
class HttpResult:
    """One request: its ``requests`` entry plus the numbers the throughput analysis needs."""

    entry: dict[str, Any]
    failure: str | None
    #: Full body length in bytes (bytes received so far if the transfer failed); None without a response.
    body_length: int | None = None
    #: Seconds from the end of the response headers to the last body byte.
    body_seconds: float | None = None
    #: The longest of those seconds without body bytes: from the headers to the first read that brought
    #: some, and between two such reads. One silence is a stall (a lost packet's retransmission, a
    #: process waiting for a core); a throttled body is a steady trickle of short ones.
    body_stall_seconds: float | None = None
    title: str | None = None
    #: SHA-256 (hex) of the whole body as received (also past body_limit); None without a response.
    body_sha256: str | None = None


async def fetch(
    stream: ByteStream,
    target: Target,
    ctx: ProbeContext,
    trace: Trace,
    *,
    tags: list[str],
    transaction_id: int,
) -> HttpResult:
    """GET the target's URL over ``stream``. The caller closes the stream afterwards."""
    request_headers = [
        ("Host", _host_header(target)),
        ("User-Agent", USER_AGENT),
        ("Accept", ACCEPT),
        ("Accept-Language", "en-US,en;q=0.9"),
    ]
    request = httpcore.Request(
        b"GET",
        httpcore.URL(
            scheme=target.scheme.encode(),
            host=target.host.encode(),
            port=target.port,
            target=_request_target(target.url).encode(),
        ),
        headers=request_headers,
        # httpcore applies these to each read and write: the longest silence we tolerate.
        extensions={"timeout": {"read": ctx.http_timeout, "write": ctx.http_timeout}},
    )
    connection = httpcore.AsyncHTTP11Connection(
        origin=httpcore.Origin(target.scheme.encode(), target.host.encode(), target.port),
        stream=HttpcoreStream(stream),
    )

    t0 = trace.now()
    trace.event("http_transaction_start", stream.address, transaction_id, tags=tags)
    digest = hashlib.sha256()
    code = 0
    response_headers: list[tuple[str, str]] = []
    kept = bytearray()
    total = 0
    headers_at: float | None = None
    last_byte_at: float | None = None
    longest_silence = 0.0
    failure: str | None = None
    try:
        # The whole exchange is also capped, so a trickling (throttled) body cannot hang us.
        async with asyncio.timeout(ctx.http_total_timeout):
            response = await connection.handle_async_request(request)
            headers_at = time.monotonic()
            code = response.status
            response_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers]
            try:
                # Read the body to the end even past body_limit: length and throughput must be exact.
                async for chunk in cast(AsyncIterable[bytes], response.stream):
                    total += len(chunk)
                    digest.update(chunk)
                    now = time.monotonic()
                    longest_silence = max(longest_silence, now - (last_byte_at or headers_at))
                    last_byte_at = now
                    room = ctx.body_limit - len(kept)
                    if room > 0:
                        kept += chunk[:room]
            finally:
                await response.aclose()
    except Exception as exc:
        failure = failure_string(exc)
    t = trace.now()
    trace.event("http_transaction_done", stream.address, transaction_id, t0=t0, t=t, failure=failure, tags=tags)

    body = bytes(kept)
    truncated = total > len(body)
    entry = {
        "network": "tcp",
        "address": stream.address,
        "alpn": "http/1.1",
        "failure": failure,
        "request": {
            "url": target.url,
            "method": "GET",
            "headers": _first_values(request_headers),
            "headers_list": [[k, v] for k, v in request_headers],
            "body": "",
            "body_is_truncated": False,
            "tor": {"is_tor": False, "exit_ip": None, "exit_name": None},
            "x_transport": "tcp",
        },
        "response": {
            "code": code,
            "headers": _first_values(response_headers),
            "headers_list": [[k, v] for k, v in response_headers],
            "body": _maybe_binary(body, truncated),
            "body_is_truncated": truncated,
        },
        "t0": t0,
        "t": t,
        "tags": list(tags),
        "transaction_id": transaction_id,
    }
    result = HttpResult(entry=entry, failure=failure)
    if headers_at is not None:
        result.body_length = total
        result.body_seconds = round((last_byte_at or headers_at) - headers_at, 6)
        result.body_stall_seconds = round(longest_silence, 6)
        result.title = page_title(body)
        result.body_sha256 = digest.hexdigest()
    return result


def page_title(body: bytes) -> str | None:
    """The page's ``<title>``, unescaped and with whitespace collapsed; None when there is none."""
    match = _TITLE.search(body)
    if match is None:
        return None
    text = html.unescape(match.group(1).decode("utf-8", errors="replace"))
    return " ".join(text.split())


def _host_header(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return host if target.port == DEFAULT_PORTS[target.scheme] else f"{host}:{target.port}"


def _request_target(url: str) -> str:
    # Target keeps only the path; the request line needs the query string too.
    parts = urlsplit(url)
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def _first_values(headers: list[tuple[str, str]]) -> dict[str, str]:
    """OONI's ``headers`` map: first value of each header, original capitalisation."""
    first: dict[str, str] = {}
    for key, value in headers:
        first.setdefault(key, value)
    return first


def _maybe_binary(body: bytes, truncated: bool) -> str | dict[str, str]:
    """OONI MaybeBinaryData: the UTF-8 text, or base64 when the body is not UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Truncation can split the last character: drop that fragment rather than go binary.
        if truncated and exc.reason == "unexpected end of data":
            return body[: exc.start].decode("utf-8", errors="replace")
        return {"format": "base64", "data": base64.b64encode(body).decode("ascii")}


@dataclass
class FetchTags:
    """OONI tags for the entries of each step of the chain (written for depth 0)."""

    dns: list[str] = field(default_factory=list)
    public_dns: list[str] = field(default_factory=list)
    connection: list[str] = field(default_factory=list)

    def at_depth(self, depth: int) -> FetchTags:
        """The tags of redirect hop ``depth``: ``depth=N``; ``classic`` stays (the hop's lookup is
        the system resolver's, as web_connectivity 0.5 tags it at every depth), while
        ``tcptls_experiment`` marks the depth-0 endpoints only."""
        if depth == 0:
            return self

        def move(tags: list[str]) -> list[str]:
            return [f"depth={depth}" if t.startswith("depth=") else t for t in tags if t != "tcptls_experiment"]

        return FetchTags(dns=move(self.dns), public_dns=move(self.public_dns), connection=move(self.connection))


@dataclass
class _Hop:
    """What one hop of the chain ended with."""

    stage: str | None = None  # the failing stage, None when the hop got a response
    failure: str | None = None
    result: HttpResult | None = None


async def fetch_chain(
    target: Target, ctx: ProbeContext, *, public_lookup: bool, tags: FetchTags, max_redirects: int = 0,
    ooni_flows: bool = False,
) -> dict[str, Any]:
    """dns -> tcp -> tls (https only) -> http, stopping at the first stage that fails; then, up to
    ``max_redirects`` times, the same for the URL a redirect points at.

    ``ooni_flows``: measure every endpoint web_connectivity 0.5 measures (``_side_flows``), not
    only the one that fetches, tag the entries ``fetch_body=true|false`` and write
    ``network_events``.

    Shared by ``HttpProbe`` (no redirects) and ``probes.web.WebProbe``. Returns the merged test
    keys (field list in ``probes/web.py``'s module docstring).
    """
    ensure_target_allowed(target, ctx)
    trace = Trace()
    keys: dict[str, Any] = {
        "agent": "redirect",
        "socksproxy": None,
        "queries": [],
        "tcp_connect": [],
        "tls_handshakes": [],
        "requests": [],
        "dns_experiment_failure": None,
        "http_experiment_failure": None,
        "failure": None,
        "x_failed_stage": None,
        "x_addresses": [],
        "x_resolved": {"system": [], "public": None},
        "x_dns_responses": {"system": 0},
        "x_status_code": None,
        "x_body_length": None,
        "x_body_seconds": None,
        "x_body_stall_seconds": None,
        "x_title": None,
        "x_body_sha256": None,
    }
    if ooni_flows:
        keys["network_events"] = trace.network_events
    current = target
    depth = 0
    while True:
        hop = await _hop(current, ctx, trace, keys, tags.at_depth(depth), public_lookup=public_lookup and depth == 0,
                         depth=depth, ooni_flows=ooni_flows)
        if hop.result is not None:
            r = hop.result
            keys["x_status_code"] = r.entry["response"]["code"] or None
            keys["x_body_length"] = r.body_length
            keys["x_body_seconds"] = r.body_seconds
            keys["x_body_stall_seconds"] = r.body_stall_seconds
            keys["x_title"] = r.title
            keys["x_body_sha256"] = r.body_sha256
        if hop.stage is not None:
            return _stop(keys, hop.stage, hop.failure, depth)
        assert hop.result is not None
        location = location_of(hop.result.entry) if max_redirects else None
        if location is None:
            return keys
        if depth == max_redirects:
            hop.result.entry["failure"] = TOO_MANY  # OONI writes why the chain stopped on that request
            return _stop(keys, "http", TOO_MANY, depth)
        nxt, failure = next_target(location, current.url)
        if nxt is None:
            hop.result.entry["failure"] = failure
            return _stop(keys, "http", failure, depth)
        try:
            ensure_target_allowed(nxt, ctx)
        except TargetRefused:
            # Never leave the lab, not even for a redirect: the chain ends here.
            return _stop(keys, "http", f"unknown_failure: redirect to {nxt.host} outside the lab", depth)
        # Only chains that redirect carry these keys: x_redirects (the URLs, in order) and, on
        # failure, x_failed_depth (the hop that failed).
        keys.setdefault("x_redirects", []).append(nxt.url)
        current = nxt
        depth += 1


def _stop(keys: dict[str, Any], stage: str, failure: str | None, depth: int) -> dict[str, Any]:
    keys["x_failed_stage"] = stage
    keys["failure"] = failure
    if depth:
        keys["x_failed_depth"] = depth
    if stage == "dns" and depth == 0:
        # Only loopback answers: no failure of the lookup, and no HTTP step (keys["failure"] tells).
        if failure != DNS_BOGON:
            keys["dns_experiment_failure"] = failure
    elif failure != DNS_BOGON:
        keys["http_experiment_failure"] = failure
    return keys


async def _hop(target: Target, ctx: ProbeContext, trace: Trace, keys: dict[str, Any], tags: FetchTags, *,
               public_lookup: bool, depth: int, ooni_flows: bool = False) -> _Hop:
    """One URL: its entries go into ``keys`` (requests in OONI's time-reverse order)."""
    # --- DNS: the vantage's resolver decides; the public resolver is extra evidence.
    system, public = await _lookups(target, ctx, trace, public_lookup=public_lookup, tags=tags)
    # Late responses (an injected answer's real twin) may still arrive while the fetch goes on:
    # every response is recorded once the DNS windows have closed (probes.dns.after_window).
    after_window(lambda: _record_responses(keys, system, public, depth))
    if depth == 0:
        keys["x_resolved"]["system"] = system.addresses
        if public is not None:
            keys["x_resolved"]["public"] = public.addresses
        keys["dns_experiment_failure"] = system.failure
    # Like OONI, never connect to loopback answers: they name no server of the site.
    addresses = [a for a in system.addresses if not (ctx.skip_loopback and is_loopback(a))]
    if not ooni_flows:
        return await _fetch_flow(target, system, addresses, ctx, trace, keys, tags, depth=depth, ooni_flows=False)
    public_only = [a for a in (public.addresses if public else []) if a not in system.addresses
                   and not (ctx.skip_loopback and is_loopback(a))]
    plans = _side_plans(target, addresses, public_only, tags)
    if not plans:  # an https URL whose resolvers agree: the fetching flow is all there is
        return await _fetch_flow(target, system, addresses, ctx, trace, keys, tags, depth=depth, ooni_flows=True)
    fetched: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    side = asyncio.ensure_future(_side_flows(plans, target, ctx, trace, fetched))
    try:
        hop = await _fetch_flow(target, system, addresses, ctx, trace, keys, tags, depth=depth, ooni_flows=True)
    except BaseException:
        side.cancel()
        raise
    # The fetching flow had OONI's permission to fetch when it got as far as the request.
    fetched.set_result(hop.stage in (None, "http"))
    tcp_entries, tls_entries, requests = await side
    keys["tcp_connect"] += tcp_entries
    keys["tls_handshakes"] += tls_entries
    for entry in requests:
        keys["requests"].insert(0, entry)
    return hop


async def _fetch_flow(target: Target, system: DnsLookup, addresses: list[str], ctx: ProbeContext, trace: Trace,
                      keys: dict[str, Any], tags: FetchTags, *, depth: int, ooni_flows: bool) -> _Hop:
    """The flow that fetches: TCP to every address of the vantage's resolver, TLS (https), GET."""
    if not system.addresses:
        return _Hop("dns", system.failure or "dns_no_answer")
    if not addresses:
        return _Hop("dns", DNS_BOGON)
    if depth == 0:
        keys["x_addresses"] = addresses
    conn_tags = [*tags.connection, "fetch_body=true"] if ooni_flows else tags.connection

    # --- TCP to every address; the first that connects carries TLS and HTTP (OONI's flows: TLS on
    # every connected address, the first handshake that succeeds in address order fetches).
    flows = await connect_each(addresses, target.port, ctx, trace, tags=conn_tags)
    keys["tcp_connect"] += [entry for entry, _ in flows]
    connected = [c for _, c in flows if c is not None]
    if not connected:
        return _Hop("tcp", first_connect_failure([entry for entry, _ in flows]))
    if not ooni_flows:
        for extra in connected[1:]:
            await extra.stream.close()
        connected = connected[:1]

    stream: ByteStream | None = None
    try:
        if target.is_https:
            shakes = await gather_each(handshake(c.stream, target.host, ctx, trace, tags=conn_tags,
                                                 transaction_id=c.transaction_id) for c in connected)
            keys["tls_handshakes"] += [entry for entry, _ in shakes]
            winner = next(((c, tls) for c, (_, tls) in zip(connected, shakes, strict=True) if tls is not None), None)
            if winner is None:
                return _Hop("tls", shakes[0][0]["failure"])
            chosen, stream = winner[0], winner[1]
        else:
            chosen = connected[0]
            stream = chosen.stream
        result = await fetch(stream, target, ctx, trace, tags=conn_tags, transaction_id=chosen.transaction_id)
    finally:
        for c in connected:
            await c.stream.close()
    # OONI wants requests in time-reverse order: the last redirect first.
    keys["requests"].insert(0, result.entry)
    if result.failure is not None:
        return _Hop("http", result.failure, result)
    return _Hop(result=result)


#: One side flow: its addresses, port, whether it does TLS, and its tags.
_SidePlan = tuple[list[str], int, bool, list[str]]


def _side_plans(target: Target, addresses: list[str], public_only: list[str], tags: FetchTags) -> list[_SidePlan]:
    """The endpoints web_connectivity 0.5 measures besides the fetching flow (dnsresolvers.go,
    cleartextflow.go, secureflow.go, priority.go): the URL's port of addresses only the public
    resolver gave, which fetch only when the system resolver's flow never got to its request
    (OONI's priority: system addresses first, then the others; the response is recorded, its
    redirect not followed); and for an ``http://`` URL without an explicit port, TCP and TLS (SNI
    the URL's host) to 443 of every address, which never fetch (``fetch_body=false``). Plans
    without an address are left out."""
    not_classic = [t for t in tags.connection if t != "classic"]
    plans: list[_SidePlan] = []
    if public_only:
        plans.append((public_only, target.port, target.is_https, [*not_classic, "fetch_body=true"]))
    if target.scheme == "http" and urlsplit(target.url).port is None:
        plans.append((addresses, 443, True, [*tags.connection, "fetch_body=false"]))
        if public_only:
            plans.append((public_only, 443, True, [*not_classic, "fetch_body=false"]))
    return [plan for plan in plans if plan[0]]


async def _side_flows(plans: list[_SidePlan], target: Target, ctx: ProbeContext, trace: Trace,
                      fetched: asyncio.Future[bool],
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Measure the side flows ``_side_plans`` gave. Returns (tcp_connect entries, tls_handshakes
    entries, requests entries)."""

    async def flow(ips: list[str], port: int, is_secure: bool, flow_tags: list[str]
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        flows = await connect_each(ips, port, ctx, trace, tags=flow_tags)
        connected = [c for _, c in flows if c is not None]
        shakes: list[tuple[dict[str, Any], TlsStream | None]] = []
        requests: list[dict[str, Any]] = []
        try:
            if is_secure:
                shakes = await gather_each(
                    handshake(c.stream, target.host, ctx, trace, tags=flow_tags, transaction_id=c.transaction_id)
                    for c in connected)
            usable: list[tuple[Connection, ByteStream]] = (
                [(c, tls) for c, (_, tls) in zip(connected, shakes, strict=True) if tls is not None] if is_secure
                else [(c, c.stream) for c in connected])
            if "fetch_body=true" in flow_tags and usable and not await fetched:
                c, stream = usable[0]
                result = await fetch(stream, target, ctx, trace, tags=flow_tags, transaction_id=c.transaction_id)
                requests.append(result.entry)
        finally:
            for c in connected:
                await c.stream.close()
        return [entry for entry, _ in flows], [entry for entry, _ in shakes], requests

    done = await gather_each(flow(*plan) for plan in plans)
    return ([e for tcp, _, _ in done for e in tcp], [e for _, tls, _ in done for e in tls],
            [r for _, _, reqs in done for r in reqs])


def _record_responses(keys: dict[str, Any], system: DnsLookup, public: DnsLookup | None, depth: int) -> None:
    keys["queries"] += system.entries + (public.entries if public else [])
    if depth == 0:
        keys["x_dns_responses"]["system"] = system.responses
        if public is not None:
            keys["x_dns_responses"]["public"] = public.responses


async def _lookups(
    target: Target, ctx: ProbeContext, trace: Trace, *, public_lookup: bool, tags: FetchTags
) -> tuple[DnsLookup, DnsLookup | None]:
    if not public_lookup or not ctx.public_resolver or host_is_ip(target.host):
        return await resolve_target(target, ctx, trace, tags=tags.dns), None
    ensure_address_allowed(ctx.resolver, "DNS resolver")
    ensure_address_allowed(ctx.public_resolver, "public DNS resolver")
    system, public = await asyncio.gather(
        lookup_both(target.host, ctx.resolver, ctx, trace, engine="system", tags=tags.dns),
        lookup_both(target.host, ctx.public_resolver, ctx, trace, engine="udp", tags=tags.public_dns),
    )
    return system, public


class HttpProbe(Probe):
    """Fetch the target's URL once (no redirects): resolve, connect, TLS for https, GET."""

    name: ClassVar[str] = "http"
    version: ClassVar[str] = "0.1.0"
    test_name: ClassVar[str] = "urlgetter"
    # One request, no redirects, the vantage's resolver only.
    capabilities: ClassVar[Capabilities] = Capabilities(stages=STAGES, throughput=True)

    async def run(self, target: Target, ctx: ProbeContext) -> dict[str, Any]:
        return await fetch_chain(target, ctx, public_lookup=False, tags=FetchTags())
