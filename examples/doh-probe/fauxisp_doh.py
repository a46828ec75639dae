"""A DNS-over-HTTPS probe (RFC 8484) for fauxisp, with its in-lab server, in one file.

Target: a DoH endpoint, ``https://dns.test/dns-query``; ``?name=open.test`` names the domain to
look up (by default the server's own name). The probe resolves the server through the vantage's
resolver (and the public one, as evidence), connects to 443, does the TLS handshake with SNI = the
server's name against the lab CA, then GETs ``/dns-query?dns=<base64url of the query>`` and reads
the DNS answer from the body (``application/dns-message``). Measurements are OONI ``dnscheck``
with the usual test keys, so the standard verdicts apply: ``dns.*`` when the server's name is
blocked, ``tcp.*`` for its address and port, ``tls.*`` for SNI rules, ``http.*`` when the exchange
breaks after the handshake.

The lab has no DoH endpoint of its own: ``DohProbe.servers`` declares one (netlab.addons), started
for a scenario with targets on ``/dns-query``, on port 443 of exactly the sites those targets name
(it takes 443 of them from the lab's origin). It is this module run as a program (``python3 -m
fauxisp_doh --config FILE``, the bottom of this file), answering from the lab's public resolver.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import ssl
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import dns.message
import dns.rdatatype
import h11

from netlab.addons import Server
from netlab.capabilities import Capabilities
from netlab.services.addon import ServerConfig, main_for
from netlab.target import Target, host_is_ip
from probes.base import Probe
from probes.context import ProbeContext
from probes.dns import after_window, lookup, resolve_target
from probes.errors import TargetRefused
from probes.failures import dns_rcode_failure
from probes.http import fetch
from probes.safety import ensure_address_allowed, ensure_target_allowed
from probes.tcp import connect_all, first_connect_failure
from probes.tls import handshake
from probes.trace import Trace

PATH = "/dns-query"
MEDIA_TYPE = "application/dns-message"


class DohProbe(Probe):
    name: ClassVar[str] = "doh"
    version: ClassVar[str] = "0.1.0"
    test_name: ClassVar[str] = "dnscheck"  # OONI's experiment for DoT/DoH resolvers
    # Resolves the server (both resolvers), connects to 443, handshakes, makes one HTTP request.
    capabilities: ClassVar[Capabilities] = Capabilities(stages=("dns", "tcp", "tls", "http"), public_dns=True,
                                                        schemes=("https",), ports=(443,))
    # What it talks to: a DoH endpoint on the sites its targets name (the server below).
    servers: ClassVar[tuple[Server, ...]] = (
        Server(name="doh", module="fauxisp_doh", port=443, sites="targets", path=PATH,
               description="DNS over HTTPS, RFC 8484"),)

    async def run(self, target: Target, ctx: ProbeContext) -> dict[str, Any]:
        ensure_target_allowed(target, ctx)
        qname = parse_qs(urlsplit(target.url).query).get("name", [target.host])[0]
        if qname not in ctx.lab_names:
            raise TargetRefused(f"refusing {target.url}: {qname!r} is not a name this lab serves")
        trace = Trace()
        keys: dict[str, Any] = {"queries": [], "tcp_connect": [], "tls_handshakes": [], "requests": [],
                                "failure": None, "x_failed_stage": None, "x_addresses": [], "x_doh_answers": [],
                                "x_resolved": {"system": [], "public": None}, "x_status_code": None,
                                "x_title": None, "x_body_length": None}

        def stop(stage: str, failure: str | None) -> dict[str, Any]:
            keys["x_failed_stage"], keys["failure"] = stage, failure
            return keys

        # 1. Where is the DoH server? The vantage's resolver decides; the public one is evidence.
        lookups = [resolve_target(target, ctx, trace, tags=["doh_server"])]
        if ctx.public_resolver and not host_is_ip(target.host):
            ensure_address_allowed(ctx.public_resolver, "public DNS resolver")
            lookups.append(lookup(target.host, ctx.public_resolver, ctx, trace, engine="udp", tags=["doh_server"]))
        system, *public = await asyncio.gather(*lookups)

        def dns_entries() -> None:  # every response, late (injected) ones too: once the DNS windows close
            keys["queries"][:0] = system.entries + [e for p in public for e in p.entries]  # ahead of the DoH query

        after_window(dns_entries)
        keys["x_resolved"] = {"system": system.addresses, "public": public[0].addresses if public else None}
        if not system.addresses:
            return stop("dns", system.failure or "dns_no_answer")
        keys["x_addresses"] = system.addresses

        # 2. TCP to 443, 3. TLS with SNI, 4. one GET with the query in the URL (RFC 8484 4.1).
        entries, conn = await connect_all(system.addresses, target.port, ctx, trace, tags=["doh"])
        keys["tcp_connect"] = entries
        if conn is None:
            return stop("tcp", first_connect_failure(entries))
        stream: Any = conn.stream
        try:
            entry, tls = await handshake(conn.stream, target.host, ctx, trace, tags=["doh"],
                                         transaction_id=conn.transaction_id)
            keys["tls_handshakes"] = [entry]
            if tls is None:
                return stop("tls", entry["failure"])
            stream = tls
            query = dns.message.make_query(qname, dns.rdatatype.A)
            query.id = 0  # RFC 8484 4.1: 0, so that equal queries are equal URLs (caches)
            wire = base64.urlsafe_b64encode(query.to_wire()).rstrip(b"=").decode()
            port = "" if target.port == 443 else f":{target.port}"
            request = Target.parse(f"https://{target.host}{port}{PATH}?dns={wire}")
            t0 = trace.now()
            result = await fetch(tls, request, ctx, trace, tags=["doh"], transaction_id=conn.transaction_id)
        finally:
            await stream.close()
        keys["requests"] = [result.entry]
        if result.failure is not None:
            return stop("http", result.failure)
        keys["x_status_code"] = result.entry["response"]["code"] or None
        keys["x_body_length"], keys["x_title"] = result.body_length, result.title
        body = _body_bytes(result.entry["response"]["body"])
        response = None
        with contextlib.suppress(Exception):  # not a DNS message: the status/length comparison tells
            response = dns.message.from_wire(body)
        keys["queries"].append(_entry(qname, conn.stream.address, t0, trace.now(), response, body,
                                      conn.transaction_id))
        keys["x_doh_answers"] = [a["ipv4"] for a in keys["queries"][-1]["answers"]]
        return keys


def _body_bytes(body: str | dict[str, str]) -> bytes:
    """The response body back from OONI's MaybeBinaryData."""
    if isinstance(body, dict):
        return base64.b64decode(body["data"])
    return body.encode()


def _entry(qname: str, server: str, t0: float, t: float, response: dns.message.Message | None, raw: bytes,
           transaction_id: int) -> dict[str, Any]:
    answers = []
    if response is not None:
        for rrset in response.answer:
            for rd in rrset:
                if rd.rdtype == dns.rdatatype.A:
                    answers.append({"answer_type": "A", "ipv4": rd.address, "ttl": rrset.ttl})
    if response is None:
        failure: str | None = "dns_invalid_response"
    elif response.rcode() != 0 or not answers:
        failure = dns_rcode_failure(response.rcode())
    else:
        failure = None
    return {"answers": answers, "engine": "doh", "failure": failure, "hostname": qname, "query_type": "A",
            "raw_response": base64.b64encode(raw).decode() if raw else None,
            "rcode": response.rcode() if response is not None else None, "resolver_address": server,
            "resolver_hostname": None, "resolver_port": None, "t0": t0, "t": t, "tags": ["doh"],
            "transaction_id": transaction_id}


# ------------------------------------------------------------------ the server (in the lab internet)

log = logging.getLogger("doh")
IDLE_TIMEOUT = 10.0
MAX_BODY = 65535


async def _answer(config: ServerConfig, request: h11.Request, body: bytes) -> tuple[int, bytes]:
    """RFC 8484: GET with ?dns=<base64url>, or POST with the message as the body."""
    target = request.target.decode("latin-1")
    parts = urlsplit(target)
    if parts.path != PATH:
        return 404, b""
    if request.method == b"GET":
        data = parse_qs(parts.query).get("dns", [""])[0]
        try:
            query = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        except ValueError:
            return 400, b""
    elif request.method == b"POST":
        query = body
    else:
        return 405, b""
    if len(query) < 12:
        return 400, b""
    try:
        return 200, await config.resolve(query)
    except (TimeoutError, OSError) as exc:
        log.debug("upstream: %s", exc)
        return 502, b""


async def _serve_connection(config: ServerConfig, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    local = writer.get_extra_info("sockname")[0]
    sock = writer.get_extra_info("socket")
    if sock is not None:  # small TLS writes would otherwise wait for delayed ACKs
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        ctx = config.tls_context(local, alpn=["http/1.1"])
        if ctx is None:
            return  # not one of our sites' addresses
        await writer.start_tls(ctx, ssl_handshake_timeout=IDLE_TIMEOUT)
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        async with asyncio.timeout(IDLE_TIMEOUT):
            while True:  # one request per connection: the response closes it
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_BODY:
                        return
                elif isinstance(event, h11.EndOfMessage) and request is not None:
                    break
                else:
                    return
        status, payload = await _answer(config, request, body)
        headers = [("Content-Type", MEDIA_TYPE if status == 200 else "text/plain"),
                   ("Content-Length", str(len(payload))), ("Cache-Control", "max-age=0"), ("Connection", "close")]
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
        writer.write(conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage()))
        await writer.drain()
    except (h11.RemoteProtocolError, TimeoutError, ConnectionError, ssl.SSLError, OSError) as exc:
        log.debug("%s: %s", local, exc)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            await writer.wait_closed()


async def serve(config: ServerConfig) -> None:
    # One listener per site: the origin keeps 443 of the other sites (a wildcard would take them).
    servers = [await asyncio.start_server(lambda r, w: _serve_connection(config, r, w),
                                          sock=config.listener(site.address)) for site in config.sites]
    log.info("DNS over HTTPS on port %d of %s, upstream %s", config.port,
             ", ".join(s.name for s in config.sites), config.upstream)
    await config.serve_until_stopped(servers)


if __name__ == "__main__":
    raise SystemExit(main_for(serve))
