"""HTTP/3 over QUIC: per resolved address, the QUIC handshake (SNI = the target's host, ALPN h3,
the lab CA) and a GET of the target's path, with aioquic.

Measurements take OONI's shapes: ``quic_handshakes`` entries as probe-cli's measurexlite writes
them (``network: "udp"``, ``address`` ip:port, ``server_name``, ``negotiated_protocol``,
``peer_certificates``, ``failure``, ...), HTTP/3 exchanges in ``requests`` (``network: "udp"``,
``alpn: "h3"``), and network events ``quic_handshake_start``/``quic_handshake_done`` plus UDP
``write_to``/``read_from``. A dropped Initial is ``generic_timeout_error`` (quic-go's handshake
timeout, as OONI records it); an ICMP error answering it (a firewall rejecting UDP) is
``connection_refused`` or ``host_unreachable``: the socket is connected, so the kernel hands the
ICMP error to it. ``x_failed_stage`` is ``quic`` (handshake) or ``http`` (the request after it).

Settings (ProbeContext, scenario ``probe:``): ``quic_timeout`` (handshake, default 3 s as OONI's
simplequicping), ``quic_version`` (1 or 2) and ``quic_split_hello`` (a post-quantum-sized
ClientHello that spans two Initial datagrams, as Chrome's since version 124).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from typing import Any, ClassVar

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, ProtocolNegotiated, QuicEvent, StreamReset
from aioquic.quic.packet import QuicProtocolVersion
from cryptography.hazmat.primitives.serialization import Encoding

from netlab.capabilities import Capabilities
from netlab.target import Target
from probes.base import Probe
from probes.context import ProbeContext
from probes.dns import resolve_into
from probes.errors import QuicFailure
from probes.failures import GENERIC_TIMEOUT, failure_string
from probes.http import USER_AGENT, page_title
from probes.safety import ensure_address_allowed, ensure_target_allowed
from probes.streams import endpoint
from probes.trace import IO_EVENTS_PER_TRANSACTION, Trace

VERSIONS = {1: QuicProtocolVersion.VERSION_1, 2: QuicProtocolVersion.VERSION_2}
# TLS alerts a QUIC CONNECTION_CLOSE carries as 0x100 + alert -> OONI's failure strings
# (probe-cli internal/netxlite/classify.go, ClassifyQUICHandshakeError).
_ALERT_FAILURES = {40: "ssl_failed_handshake", 42: "ssl_invalid_certificate", 43: "ssl_invalid_certificate",
                   44: "ssl_invalid_certificate", 45: "ssl_invalid_certificate", 46: "ssl_invalid_certificate",
                   48: "ssl_unknown_authority", 51: "ssl_failed_handshake", 112: "ssl_invalid_hostname"}


class _Events:
    """Datagram events of one connection, in OONI's shape (proto udp), bounded like Trace's."""

    def __init__(self, trace: Trace, address: str, transaction_id: int) -> None:
        self.trace, self.address, self.tid, self.count = trace, address, transaction_id, 0

    def io(self, operation: str, num_bytes: int) -> None:
        if self.count >= IO_EVENTS_PER_TRANSACTION:
            return
        self.count += 1
        self.annotate(operation, num_bytes=num_bytes)

    def annotate(self, operation: str, failure: str | None = None, t0: float | None = None,
                 num_bytes: int | None = None) -> None:
        t = self.trace.now()
        entry: dict[str, Any] = {"address": self.address, "failure": failure, "operation": operation,
                                 "proto": "udp", "t0": t if t0 is None else t0, "t": t, "tags": [],
                                 "transaction_id": self.tid}
        if num_bytes is not None:
            entry["num_bytes"] = num_bytes
        self.trace.network_events.append(entry)


class _CountingTransport:
    """The datagram transport, recording each write_to."""

    def __init__(self, inner: asyncio.DatagramTransport, events: _Events) -> None:
        self._inner, self._events = inner, events

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._events.io("write_to", len(data))
        self._inner.sendto(data)  # the socket is connected: no address

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _H3Client(QuicConnectionProtocol):
    """A QUIC client connection that notes why it ended, ICMP errors included, and runs HTTP/3."""

    def __init__(self, quic: QuicConnection, events: _Events) -> None:
        super().__init__(quic)
        self.events = events
        self.alpn: str | None = None
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.http: H3Connection | None = None
        self.responses: dict[int, tuple[list[tuple[bytes, bytes]], bytearray, asyncio.Future[None]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(_CountingTransport(transport, self.events))  # type: ignore[arg-type]

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        self.events.io("read_from", len(data))
        super().datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error on the connected socket: port or host unreachable (a rejecting firewall).
        self._end(failure_string(exc))

    def _end(self, failure: str) -> None:
        if not self.ended.done():
            self.ended.set_result(failure)
        for _, _, done in self.responses.values():
            if not done.done():
                done.set_exception(QuicFailure(failure))

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated):
            self.alpn = event.alpn_protocol
        elif isinstance(event, ConnectionTerminated):
            code = event.error_code
            self._end(_ALERT_FAILURES.get(code - 0x100, "ssl_failed_handshake") if 0x100 <= code < 0x200
                      else f"unknown_failure: quic error {code:#x} {event.reason_phrase}".strip())
        elif isinstance(event, StreamReset) and event.stream_id in self.responses:
            done = self.responses[event.stream_id][2]
            if not done.done():
                done.set_exception(QuicFailure("connection_reset"))
        if self.http is not None:
            for h3_event in self.http.handle_event(event):
                self._http_event(h3_event)

    def _http_event(self, event: H3Event) -> None:
        slot = self.responses.get(getattr(event, "stream_id", -1))
        if slot is None:
            return
        if isinstance(event, HeadersReceived):
            slot[0].extend(event.headers)
        elif isinstance(event, DataReceived):
            slot[1].extend(event.data)
        if getattr(event, "stream_ended", False) and not slot[2].done():
            slot[2].set_result(None)

    async def get(self, target: Target) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """One HTTP/3 GET of ``target``: (response headers, body)."""
        self.http = self.http or H3Connection(self._quic)
        stream_id = self._quic.get_next_available_stream_id()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.responses[stream_id] = ([], bytearray(), done)
        self.http.send_headers(stream_id, request_headers(target), end_stream=True)
        self.transmit()
        await done
        headers, body, _ = self.responses.pop(stream_id)
        return headers, bytes(body)


def request_headers(target: Target) -> list[tuple[bytes, bytes]]:
    authority = target.host if target.port == 443 else f"{target.host}:{target.port}"
    return [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", authority.encode()),
            (b":path", target.path.encode()), (b"user-agent", USER_AGENT.encode()), (b"accept", b"*/*")]


def client_configuration(ctx: ProbeContext, server_name: str) -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=server_name,
                               original_version=VERSIONS[ctx.quic_version],
                               quantum_readiness_test=ctx.quic_split_hello)
    config.load_verify_locations(cafile=ctx.ca_file)
    return config


async def _handshake(protocol: _H3Client, timeout: float) -> None:
    connected = asyncio.ensure_future(protocol.wait_connected())
    # It fails too when the connection ends first (an ICMP error, a TLS alert): already reported.
    connected.add_done_callback(lambda f: f.cancelled() or f.exception())
    try:
        waiting: set[asyncio.Future[Any]] = {connected, protocol.ended}
        done, _ = await asyncio.wait(waiting, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not connected.done() and not protocol.ended.done():
            connected.cancel()  # (when the connection ended, aioquic fails it itself)
    if protocol.ended.done():
        raise QuicFailure(protocol.ended.result())
    if connected not in done:
        raise TimeoutError("QUIC handshake timed out")
    connected.result()


def _tls_facts(protocol: _H3Client) -> tuple[str, list[bytes]]:
    """Cipher suite (IANA name) and the server's chain (DER), from aioquic's TLS state."""
    tls = getattr(protocol._quic, "tls", None)
    suite = getattr(getattr(tls, "key_schedule", None), "cipher_suite", None)
    chain = [c for c in [getattr(tls, "_peer_certificate", None), *getattr(tls, "_peer_certificate_chain", [])]
             if c is not None]
    return (f"TLS_{suite.name}" if suite is not None else ""), [c.public_bytes(Encoding.DER) for c in chain]


async def measure_address(target: Target, ip: str, ctx: ProbeContext, trace: Trace
                          ) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """Handshake and GET on one address: (quic_handshakes entry, requests entry or None, result
    facts: failure, stage, status, body)."""
    # Before any socket exists; a refusal is no network failure, so it is not caught below.
    ensure_address_allowed(ip, "QUIC handshake")
    tid = trace.new_transaction()
    address = endpoint(ip, target.port)
    events = _Events(trace, address, tid)
    loop = asyncio.get_running_loop()
    quic = QuicConnection(configuration=client_configuration(ctx, target.host))
    t0 = trace.now()
    events.annotate("quic_handshake_start")
    failure: str | None = None
    transport = None
    protocol: _H3Client | None = None
    facts: dict[str, Any] = {"failure": None, "stage": None}
    request: dict[str, Any] | None = None
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _H3Client(quic, events), remote_addr=(ip, target.port),
            family=socket.AF_INET6 if ":" in ip else socket.AF_INET)
        # aioquic knows a network path by the address the socket reports: four items for IPv6.
        protocol.connect((ip, target.port, 0, 0) if ":" in ip else (ip, target.port))
        await _handshake(protocol, ctx.quic_timeout)
    except Exception as exc:
        failure = exc.failure if isinstance(exc, QuicFailure) else failure_string(exc)
    t = trace.now()
    events.annotate("quic_handshake_done", failure=failure, t0=t0)
    suite, chain = _tls_facts(protocol) if protocol is not None and failure is None else ("", [])
    handshake = {
        "network": "udp", "address": address, "server_name": target.host,
        "cipher_suite": suite, "tls_version": "TLSv1.3" if failure is None else "",
        "negotiated_protocol": (protocol.alpn or "") if protocol is not None and failure is None else "",
        "no_tls_verify": False,
        "peer_certificates": [{"data": base64.b64encode(d).decode("ascii"), "format": "base64"} for d in chain],
        "failure": failure, "t0": t0, "t": t, "tags": [], "transaction_id": tid,
    }
    if failure is not None:
        facts.update(failure=failure, stage="quic")
    else:
        assert protocol is not None
        request, facts = await _get(protocol, target, address, ctx, trace, tid)
    if protocol is not None:
        protocol.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(protocol.wait_closed(), 0.5)
    if transport is not None:
        transport.close()
    return handshake, request, facts


async def _get(protocol: _H3Client, target: Target, address: str, ctx: ProbeContext, trace: Trace, tid: int
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    t0 = trace.now()
    failure: str | None = None
    headers: list[tuple[bytes, bytes]] = []
    body = b""
    try:
        async with asyncio.timeout(ctx.http_total_timeout):  # a whole exchange, as the HTTP probes cap it
            headers, body = await protocol.get(target)
    except Exception as exc:
        failure = exc.failure if isinstance(exc, QuicFailure) else failure_string(exc)
    t = trace.now()
    fields = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if not k.startswith(b":")]
    status = next((int(v) for k, v in headers if k == b":status" and v.isdigit()), None)
    kept = body[:ctx.body_limit]
    sent = [(k.decode(), v.decode()) for k, v in request_headers(target)]
    entry: dict[str, Any] = {
        "network": "udp", "address": address, "alpn": "h3", "failure": failure,
        "request": {"url": target.url, "method": "GET", "headers": dict(sent), "headers_list": [list(h) for h in sent],
                    "body": "", "body_is_truncated": False,
                    "tor": {"is_tor": False, "exit_ip": None, "exit_name": None}, "x_transport": "udp"},
        "response": {"code": status or 0, "headers": dict(fields), "headers_list": [list(h) for h in fields],
                     "body": kept.decode("utf-8", errors="replace"), "body_is_truncated": len(body) > len(kept)},
        "t0": t0, "t": t, "tags": [], "transaction_id": tid,
    }
    facts: dict[str, Any] = {"failure": failure, "stage": "http" if failure else None}
    if failure is None:
        facts.update(status=status, body_length=len(body), title=page_title(body))
    return entry, facts


async def quic_step(keys: dict[str, Any], target: Target, ctx: ProbeContext) -> None:
    """The web probe's QUIC step (probe setting ``web_quic``): after a successful fetch of an
    https URL on port 443, the QUIC handshake and an HTTP/3 GET to the addresses it connected to.
    Adds ``quic_handshakes`` and ``x_quic_failure`` (None when HTTP/3 worked on one address, else
    the first address's failure; absent when the step did not run)."""
    if not target.is_https or target.port != 443 or keys.get("x_failed_stage") or not keys.get("x_addresses"):
        return
    trace = Trace()
    results = await asyncio.gather(*(measure_address(target, ip, ctx, trace) for ip in keys["x_addresses"]))
    keys["quic_handshakes"] = [handshake for handshake, _, _ in results]
    facts = [f for _, _, f in results]
    keys["x_quic_failure"] = None if any(f["failure"] is None for f in facts) else facts[0]["failure"]


class QuicProbe(Probe):
    """Resolve, then per address: the QUIC handshake and an HTTP/3 GET."""

    name: ClassVar[str] = "quic"
    version: ClassVar[str] = "0.1.0"
    test_name: ClassVar[str] = "urlgetter"
    # HTTP/3 is for https URLs only; its "tcp" and "tls" stages are the QUIC handshake.
    capabilities: ClassVar[Capabilities] = Capabilities(stages=("dns", "tcp", "tls", "http"), schemes=("https",),
                                                        quic=True)

    async def run(self, target: Target, ctx: ProbeContext) -> dict[str, Any]:
        ensure_target_allowed(target, ctx)
        trace = Trace()
        keys: dict[str, Any] = {
            "queries": [], "quic_handshakes": [], "requests": [], "network_events": [],
            "failure": None, "x_failed_stage": None, "x_addresses": [],
            "x_resolved": {"system": [], "public": None},
            "x_status_code": None, "x_title": None, "x_body_length": None,
        }
        addresses = await resolve_into(keys, target, ctx, trace)
        if not addresses:
            return keys
        results = await asyncio.gather(*(measure_address(target, ip, ctx, trace) for ip in addresses))
        for handshake, request, _ in results:
            keys["quic_handshakes"].append(handshake)
            if request is not None:
                keys["requests"].append(request)
        keys["network_events"] = trace.network_events
        good = next((f for _, _, f in results if f["failure"] is None), None)
        if good is not None:
            keys.update(x_status_code=good["status"], x_title=good["title"], x_body_length=good["body_length"])
        else:
            first = results[0][2]
            keys["failure"] = first["failure"] or GENERIC_TIMEOUT
            keys["x_failed_stage"] = first["stage"]
        return keys
