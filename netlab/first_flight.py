"""What a lab client sends first on a TCP flow, as the DPI middlebox reads it: does a rule's name
or keyword lie within the part of the flow the middlebox reassembles (``dpi.reassembly``)?

The lab's probes speak TLS through Python's ``ssl`` (OpenSSL) and HTTP/1.1 through httpcore: the
ClientHello is built here by the same library and settings (the probes' ALPN), the request head as
HTTP/1.1 writes it, request line then ``Host`` first. Each goes out in one write, which the kernel
cuts into segments of at most ``MSS`` bytes; the middlebox counts the SYN and the handshake's ACK
among the packets it reads. Pure apart from OpenSSL building a ClientHello in memory (cached).
"""

from __future__ import annotations

import contextlib
import functools
import math
import ssl
from urllib.parse import urlsplit

from netlab.model import Reassembly, Rule, ShapingRule
from netlab.target import Target

# A ClientHello larger than this is not waited for (real ones are < 2 KiB; post-quantum key
# shares push them to ~1.8 KiB, which already spans two segments on a 1500-byte link); nor an
# HTTP request head larger than MAX_HTTP_HEAD. The middlebox's parsers (netlab.services._parsers)
# and the oracle's prediction of what it reads share these.
MAX_HELLO = 16 * 1024
MAX_HTTP_HEAD = 8 * 1024
MSS = 1448  # a 1500-byte link with TCP timestamps: the lab's veths and Docker's bridges
HANDSHAKE_PACKETS = 2  # the client's SYN and its ACK of the SYN-ACK precede its first data


@functools.lru_cache(maxsize=4096)
def client_hello(host: str) -> bytes:
    """The TLS record(s) the probes' TLS client sends first to ``host`` (SNI ``host``)."""
    from probes.tls import ALPN_PROTOCOLS  # the probes' own setting, not a copy of it

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    out = ssl.MemoryBIO()
    conn = context.wrap_bio(ssl.MemoryBIO(), out, server_hostname=host)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the ServerHello, the hello written
        conn.do_handshake()
    return out.read()


def request_head(target: Target) -> bytes:
    """The start of the HTTP request for ``target``: request line and Host header."""
    parts = urlsplit(target.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = target.host if target.port == 80 else f"{target.host}:{target.port}"
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n".encode()


def needed(rule: Rule | ShapingRule, target: Target) -> int | None:
    """How many bytes of the client's stream the middlebox must read to match ``rule`` on the
    fetch of ``target``: the whole ClientHello for ``sni``, the request through the Host line for
    ``http_host``, through the keyword's first occurrence for ``keyword`` (the deepest of those the
    rule has). None when the rule's names are not in the stream at all."""
    stream = client_hello(target.host) if target.is_https else request_head(target)
    ends = []
    if rule.match.sni is not None:
        if len(stream) > MAX_HELLO:  # the middlebox's parser gives up on longer ones
            return None
        ends.append(len(stream))
    if rule.match.http_host is not None:
        if len(stream) > MAX_HTTP_HEAD:
            return None
        ends.append(len(stream))  # the head above ends with the Host line
    if rule.match.keyword is not None:
        at = stream.find(rule.match.keyword.encode())
        if at < 0:
            return None
        ends.append(at + len(rule.match.keyword.encode()))
    return max(ends, default=0)


def within(reassembly: Reassembly, rule: Rule | ShapingRule, target: Target) -> bool:
    """Does the middlebox read far enough into the flow to see what ``rule`` matches? False: the
    client evades it (the bytes lie past ``reassembly.bytes``, or in a segment past
    ``reassembly.packets``)."""
    end = needed(rule, target)
    if end is None:
        return False
    return end <= reassembly.bytes and HANDSHAKE_PACKETS + math.ceil(end / MSS) <= reassembly.packets
