"""TLS handshake with SNI = the target's host, validated against the lab CA.

The probe type resolves and connects like the tcp probe, then does the handshake on https targets;
an http target has no TLS stage, so its measurement ends after the connect (like the web probe's
path for http, without the request)."""

from __future__ import annotations

import asyncio
import base64
import functools
import ssl
from typing import Any, ClassVar

from netlab.capabilities import Capabilities
from netlab.target import Target
from probes.base import Probe
from probes.context import ProbeContext
from probes.dns import resolve_into
from probes.failures import failure_string
from probes.safety import ensure_target_allowed
from probes.streams import TcpStream, TlsStream
from probes.tcp import connect_all, first_connect_failure
from probes.trace import Trace

#: The HTTP step speaks HTTP/1.1 only, so that is all we offer in ALPN.
ALPN_PROTOCOLS = ["http/1.1"]

# OONI reports IANA cipher suite names; OpenSSL uses its own names for TLS <= 1.2 (TLS 1.3
# names are already the IANA ones). The common suites are enough: others keep OpenSSL's name.
_IANA_CIPHER_NAMES = {
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}


@functools.lru_cache(maxsize=8)
def client_context(ca_file: str) -> ssl.SSLContext:
    """A verifying client context that trusts the lab CA and nothing else (cached per CA file)."""
    # With cafile given, create_default_context loads only that file, not the system store.
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context


async def handshake(
    raw: TcpStream,
    server_name: str,
    ctx: ProbeContext,
    trace: Trace,
    *,
    tags: list[str],
    transaction_id: int,
) -> tuple[dict[str, Any], TlsStream | None]:
    """TLS handshake on ``raw``: the ``tls_handshakes`` entry, and the TLS stream on success.

    On failure the TCP stream is left open; the caller closes it.
    """
    t0 = trace.now()
    failure: str | None = None
    tls: TlsStream | None = None
    trace.event("tls_handshake_start", raw.address, transaction_id, tags=tags)
    try:
        tls = TlsStream(raw, client_context(ctx.ca_file), server_name)
        async with asyncio.timeout(ctx.tls_timeout):
            await tls.handshake()
    except Exception as exc:
        failure = failure_string(exc)
    t = trace.now()
    trace.event("tls_handshake_done", raw.address, transaction_id, t0=t0, t=t, failure=failure, tags=tags)

    # What was negotiated is only known after a successful handshake; OONI uses "" otherwise.
    cipher_suite = tls_version = negotiated_protocol = ""
    if tls is not None and failure is None:
        cipher = tls.ssl_object.cipher()
        if cipher:
            cipher_suite = _IANA_CIPHER_NAMES.get(cipher[0], cipher[0])
        tls_version = tls.ssl_object.version() or ""
        negotiated_protocol = tls.ssl_object.selected_alpn_protocol() or ""
    entry = {
        "network": "tcp",
        "address": raw.address,
        "server_name": server_name,
        "cipher_suite": cipher_suite,
        "tls_version": tls_version,
        "negotiated_protocol": negotiated_protocol,
        "no_tls_verify": False,
        "peer_certificates": [
            {"data": base64.b64encode(der).decode("ascii"), "format": "base64"} for der in _peer_chain(tls)
        ],
        "failure": failure,
        "t0": t0,
        "t": t,
        "tags": list(tags),
        "transaction_id": transaction_id,
    }
    return entry, (tls if failure is None else None)


def _peer_chain(tls: TlsStream | None) -> list[bytes]:
    if tls is None:
        return []
    try:
        return tls.peer_chain_der()
    except Exception:  # e.g. the handshake never got as far as the server's certificate
        return []


class TlsProbe(Probe):
    """Resolve, connect (first address that answers), and do the TLS handshake."""

    name: ClassVar[str] = "tls"
    version: ClassVar[str] = "0.2.0"
    test_name: ClassVar[str] = "urlgetter"
    capabilities: ClassVar[Capabilities] = Capabilities(stages=("dns", "tcp", "tls"))

    async def run(self, target: Target, ctx: ProbeContext) -> dict[str, Any]:
        ensure_target_allowed(target, ctx)
        trace = Trace()
        keys: dict[str, Any] = {
            "queries": [],
            "tcp_connect": [],
            "tls_handshakes": [],
            "failure": None,
            "x_failed_stage": None,
            "x_addresses": [],
            "x_resolved": {"system": [], "public": None},
        }
        addresses = await resolve_into(keys, target, ctx, trace)
        if not addresses:
            return keys
        entries, connection = await connect_all(addresses, target.port, ctx, trace, tags=[])
        keys["tcp_connect"] = entries
        if connection is None:
            keys["failure"] = first_connect_failure(entries)
            keys["x_failed_stage"] = "tcp"
            return keys
        if not target.is_https:
            await connection.stream.close()
            return keys
        try:
            entry, _ = await handshake(
                connection.stream, target.host, ctx, trace, tags=[], transaction_id=connection.transaction_id
            )
        finally:
            await connection.stream.close()
        keys["tls_handshakes"] = [entry]
        if entry["failure"] is not None:
            keys["failure"] = entry["failure"]
            keys["x_failed_stage"] = "tls"
        return keys
