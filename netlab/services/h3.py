"""HTTP/3 for the lab's origins: QUIC on UDP 443 of every site that has it (``quic``, the default),
beside the origin's HTTP and HTTPS on TCP, with the same certificate from the lab CA and the same
answers (``origin.SiteHandler``). aioquic does QUIC and HTTP/3; this module only maps requests to
the site's reply. The origin starts it (``origin.serve``) and advertises it on its TCP responses
with ``Alt-Svc: h3=":443"``, the way browsers learn of HTTP/3.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from netlab.services._parsers import DONE
from netlab.services._quic import client_hello_sni, read_initials

if TYPE_CHECKING:
    from netlab.services.origin import SiteHandler

log = logging.getLogger("origin.h3")

ALT_SVC = 'h3=":443"; ma=86400'  # the header the origin's TCP responses carry for a site with QUIC
PORT = 443
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----\n?", re.S)


def server_configuration(pem_path: str) -> QuicConfiguration:
    """A QUIC server configuration with the site's certificate chain and key (one PEM file, as the
    lab's PKI writes it: certificates, then the key, which aioquic's own loader wants as PKCS#8)."""
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    data = Path(pem_path).read_bytes()
    certs, key = [], None
    for block in _PEM_BLOCK.finditer(data):
        if block.group(1) == b"CERTIFICATE":
            certs.append(x509.load_pem_x509_certificate(block.group(0)))
        elif block.group(1).endswith(b"PRIVATE KEY"):
            key = load_pem_private_key(block.group(0), password=None)
    if not certs or key is None:
        raise ValueError(f"{pem_path}: no certificate and key")
    config.certificate, config.certificate_chain, config.private_key = certs[0], certs[1:], key
    return config


class H3Protocol(QuicConnectionProtocol):
    """One HTTP/3 connection: each request stream gets the reply of the site its :authority names
    (``pick``: the origin's choice among the sites sharing the address)."""

    def __init__(self, *args, pick: Callable[[str | None], SiteHandler], **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.pick = pick
        self.http: H3Connection | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self.http = H3Connection(self._quic)
        if self.http is not None:
            for h3_event in self.http.handle_event(event):
                self._http_event(h3_event)

    def _http_event(self, event: H3Event) -> None:
        if isinstance(event, DataReceived) or not isinstance(event, HeadersReceived):
            return  # request bodies are not read (GET and HEAD only)
        assert self.http is not None
        headers = dict(event.headers)
        method, path = headers.get(b":method", b"GET"), headers.get(b":path", b"/").decode("latin-1")
        # The server's socket is not connected: the client is the connection's network path (aioquic
        # keeps no public accessor), which `only_for` needs to tell ISPs' clients apart.
        paths = getattr(self._quic, "_network_paths", None)
        peer = paths[0].addr if paths else None
        authority = headers.get(b":authority")
        handler = self.pick(authority.decode("latin-1") if authority else None)
        reply = handler.reply(path, "https", peer[0] if peer else None)
        body = b"" if method == b"HEAD" else reply.body
        out = [(b":status", str(reply.status).encode()), (b"content-type", b"text/html; charset=utf-8"),
               (b"content-length", str(len(reply.body)).encode()), (b"server", b"fauxisp-origin"),
               (b"x-lab-origin", b"1"), (b"alt-svc", ALT_SVC.encode())]
        if reply.location is not None:
            out.append((b"location", reply.location.encode()))
        own = {k.lower().encode() for k, _ in reply.headers}  # the scenario's headers replace the origin's
        out = [(k, v) for k, v in out if k not in own] + [(k.lower().encode(), v.encode()) for k, v in reply.headers]
        self.http.send_headers(event.stream_id, out, end_stream=not body)
        if body:
            self.http.send_data(event.stream_id, body, end_stream=True)
        self.transmit()


class SniServer(QuicServer):
    """A QUIC server for an address several sites share (shared hosting): each new connection gets
    the certificate of the site its Initial's SNI names (read as the middlebox reads it,
    netlab.services._quic), else the default one. aioquic has one certificate per server."""

    def __init__(self, *, by_name: dict[str, QuicConfiguration], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._default = self._configuration
        self._by_name = by_name

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if self._by_name and isinstance(data, bytes):
            initials = read_initials(data)
            if initials:  # a client's Initial: perhaps a new connection (aioquic reads the configuration then)
                hello = client_hello_sni(initials)
                name = hello.value if hello.status == DONE and hello.value else ""
                self._configuration = self._by_name.get(name, self._default)
        super().datagram_received(data, addr)


async def serve_site(address: str, sites: list[tuple[list[str], str]], pick: Callable[[str | None], SiteHandler],
                     port: int = PORT) -> QuicServer:
    """HTTP/3 on UDP ``port`` (443) of ``address`` for ``sites`` ((names, certificate file), the first
    the default), answering as ``pick`` chooses by :authority."""
    configs = [(names, server_configuration(pem)) for names, pem in sites]
    by_name = {n: config for names, config in configs for n in names} if len(configs) > 1 else {}

    def protocol(*args, **kwargs) -> H3Protocol:  # type: ignore[no-untyped-def]
        return H3Protocol(*args, pick=pick, **kwargs)

    loop = asyncio.get_running_loop()
    _, server = await loop.create_datagram_endpoint(
        lambda: SniServer(by_name=by_name, configuration=configs[0][1], create_protocol=protocol),
        local_addr=(address, port))
    return server
