"""A DNS-over-TLS probe (RFC 7858) for fauxisp, in one file.

Target: the DoT server as a URL with its port, ``https://dns.test:853/``; the path may name the
domain to look up (``https://dns.test:853/news.test``), by default the server's own name. The
probe resolves the server through the vantage's resolver (and the public one, as evidence),
connects to port 853, does the TLS handshake with SNI = the server's name against the lab CA,
then sends one A query over the TLS stream and reads the answer.

Test keys follow OONI (``queries``, ``tcp_connect``, ``tls_handshakes``) plus the ``x_`` keys the
harness analysis reads (``x_failed_stage``, ``failure``, ``x_resolved``, ...), so the standard
verdicts apply: ``tcp.*`` for address/port blocking of 853, ``tls.*`` for SNI blocking, and
``http.*`` when the stream breaks after the handshake (the DNS exchange is the request stage).

The lab has no DoT server of its own: the probe declares one (``servers``, netlab.addons), which
the lab starts in its internet for any scenario with a target on port 853. It is this module run
as a program (``python3 -m fauxisp_dot --config FILE``, the bottom of this file): DNS over TLS on
853 of every site, with the site's lab certificate, answered by the lab's public resolver.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import ssl
import struct
from typing import Any, ClassVar

import dns.message
import dns.rdatatype

from netlab.addons import Server
from netlab.capabilities import Capabilities
from netlab.services.addon import ServerConfig, main_for
from netlab.target import Target, host_is_ip
from probes.base import Probe
from probes.context import ProbeContext
from probes.dns import after_window, lookup, resolve_target
from probes.errors import TargetRefused
from probes.failures import dns_rcode_failure, failure_string
from probes.safety import ensure_address_allowed, ensure_target_allowed
from probes.tcp import connect_all, first_connect_failure
from probes.tls import handshake
from probes.trace import Trace


class DotProbe(Probe):
    name: ClassVar[str] = "dot"
    version: ClassVar[str] = "0.1.0"
    test_name: ClassVar[str] = "dnscheck"  # OONI's experiment for DoT/DoH resolvers
    # Resolves the server (both resolvers), connects to 853, handshakes; no HTTP, no page.
    capabilities: ClassVar[Capabilities] = Capabilities(stages=("dns", "tcp", "tls"), public_dns=True,
                                                        schemes=("https",), ports=(853,))
    # What it talks to: started by the lab for a scenario with a target on 853 (the server below).
    servers: ClassVar[tuple[Server, ...]] = (
        Server(name="dot", module="fauxisp_dot", port=853, sites="all",
               description="DNS over TLS, RFC 7858"),)

    async def run(self, target: Target, ctx: ProbeContext) -> dict[str, Any]:
        ensure_target_allowed(target, ctx)
        qname = target.path.strip("/") or target.host
        if qname not in ctx.lab_names:
            raise TargetRefused(f"refusing {target.url}: {qname!r} is not a name this lab serves")
        trace = Trace()
        keys: dict[str, Any] = {"queries": [], "tcp_connect": [], "tls_handshakes": [], "failure": None,
                                "x_failed_stage": None, "x_addresses": [], "x_dot_answers": [],
                                "x_resolved": {"system": [], "public": None}}

        def stop(stage: str, failure: str | None) -> dict[str, Any]:
            keys["x_failed_stage"], keys["failure"] = stage, failure
            return keys

        # 1. Where is the DoT server? The vantage's resolver decides; the public one is evidence.
        lookups = [resolve_target(target, ctx, trace, tags=["dot_server"])]
        if ctx.public_resolver and not host_is_ip(target.host):
            ensure_address_allowed(ctx.public_resolver, "public DNS resolver")
            lookups.append(lookup(target.host, ctx.public_resolver, ctx, trace, engine="udp", tags=["dot_server"]))
        system, *public = await asyncio.gather(*lookups)

        def dns_entries() -> None:  # every response, late (injected) ones too: once the DNS windows close
            keys["queries"][:0] = system.entries + [e for p in public for e in p.entries]  # ahead of the DoT query

        after_window(dns_entries)
        keys["x_resolved"] = {"system": system.addresses, "public": public[0].addresses if public else None}
        if not system.addresses:
            return stop("dns", system.failure or "dns_no_answer")
        keys["x_addresses"] = system.addresses

        # 2. TCP to port 853, 3. TLS with SNI, exactly as the built-in probes do it.
        entries, conn = await connect_all(system.addresses, target.port, ctx, trace, tags=["dot"])
        keys["tcp_connect"] = entries
        if conn is None:
            return stop("tcp", first_connect_failure(entries))
        try:
            entry, tls = await handshake(conn.stream, target.host, ctx, trace, tags=["dot"],
                                         transaction_id=conn.transaction_id)
            keys["tls_handshakes"] = [entry]
            if tls is None:
                return stop("tls", entry["failure"])
            # 4. One query over the TLS stream (two-byte length prefix, RFC 7858).
            query = dns.message.make_query(qname, dns.rdatatype.A)
            t0 = trace.now()
            failure, response, raw = None, None, b""
            try:
                async with asyncio.timeout(ctx.dns_timeout):
                    wire = query.to_wire()
                    await tls.write(struct.pack("!H", len(wire)) + wire)
                    raw = await _read_message(tls)
                response = dns.message.from_wire(raw)
                if not query.is_response(response):
                    failure = "dns_invalid_response"  # hypothetical: a proxy answering something else
            except Exception as exc:
                failure = failure_string(exc)
            keys["queries"].append(_entry(qname, conn.stream.address, t0, trace.now(), failure, response, raw,
                                          conn.transaction_id))
            if failure is not None:
                return stop("http", failure)
            keys["x_dot_answers"] = [a["ipv4"] for a in keys["queries"][-1]["answers"]]
        finally:
            await conn.stream.close()
        return keys


async def _read_message(stream: Any) -> bytes:
    buf = b""
    while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
        chunk = await stream.read(4096)
        if not chunk:
            raise EOFError("the DoT server closed the stream")
        buf += chunk
    return buf[2:2 + struct.unpack("!H", buf[:2])[0]]


def _entry(qname: str, server: str, t0: float, t: float, failure: str | None,
           response: dns.message.Message | None, raw: bytes, transaction_id: int) -> dict[str, Any]:
    answers = []
    if response is not None:
        for rrset in response.answer:
            for rd in rrset:
                if rd.rdtype == dns.rdatatype.A:
                    answers.append({"answer_type": "A", "ipv4": rd.address, "ttl": rrset.ttl})
    rcode_failure = None
    if response is not None and (response.rcode() != 0 or not answers):
        rcode_failure = dns_rcode_failure(response.rcode())  # recorded; the exchange itself worked
    return {"answers": answers, "engine": "dot", "failure": failure or rcode_failure, "hostname": qname,
            "query_type": "A", "raw_response": base64.b64encode(raw).decode() if raw else None,
            "rcode": response.rcode() if response is not None else None, "resolver_address": server,
            "resolver_hostname": None, "resolver_port": None, "t0": t0, "t": t, "tags": ["dot"],
            "transaction_id": transaction_id}


# ------------------------------------------------------------------ the server (in the lab internet)

log = logging.getLogger("dot")
IDLE_TIMEOUT = 10.0


async def _serve_connection(config: ServerConfig, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One DoT client: the TLS handshake as the site it reached, then length-prefixed queries,
    each answered by the lab's resolver, until it goes quiet or away."""
    local = writer.get_extra_info("sockname")[0]
    sock = writer.get_extra_info("socket")
    if sock is not None:  # small TLS writes would otherwise wait for delayed ACKs
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        ctx = config.tls_context(local, alpn=["dot"])
        if ctx is None:
            return  # not a site's address: nothing serves DoT there
        await writer.start_tls(ctx, ssl_handshake_timeout=IDLE_TIMEOUT)
        while True:
            async with asyncio.timeout(IDLE_TIMEOUT):
                head = await reader.readexactly(2)
                query = await reader.readexactly(struct.unpack("!H", head)[0])
            answer = await config.resolve(query)
            writer.write(struct.pack("!H", len(answer)) + answer)
            await writer.drain()
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ssl.SSLError, OSError) as exc:
        log.debug("%s: %s", local, exc)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            await writer.wait_closed()


async def serve(config: ServerConfig) -> None:
    server = await asyncio.start_server(lambda r, w: _serve_connection(config, r, w), sock=config.listener())
    log.info("DNS over TLS on port %d of %d sites, upstream %s", config.port, len(config.sites), config.upstream)
    await config.serve_until_stopped([server])


if __name__ == "__main__":
    raise SystemExit(main_for(serve))
