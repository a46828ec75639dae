"""Origin servers for every site of the lab internet: HTTP on :80 and HTTPS on :443 of each
site's address, certificates from the lab CA. One asyncio process serves all sites.

HTTP/1.1 framing comes from h11 (the parser behind httpx); every response closes the connection,
which keeps the server simple and the probes' measurements independent of each other.

Any number of sites may share an address (shared hosting) and a site may have several (a CDN):
one listener per address and port serves every site there, choosing the certificate by the TLS
SNI and the content by the Host header; an unknown name gets the address's first site. A site
may answer some paths its own way (``paths``: status, headers, body, redirect), to everyone.

A site can misbehave on its own (scenario.md): a bad certificate, redirects, another status or
body. With ``only_for`` only clients from those ISPs' access networks see it (server-side
blocking); everyone else gets the normal page. States ``refused`` and ``timeout`` are packet
filter rules of the lab internet (netlab.compile.firewall.site_ruleset), not this program's job.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11

from netlab.aio import close_connection
from netlab.blockpage import bodiless, reason
from netlab.services import h3
from netlab.services._serve import Listening, listener, serve_until_stopped, service_main
from netlab.services.configs import OriginConfig, SiteConfig

log = logging.getLogger("origin")
READ_TIMEOUT = 10.0
WRITE_CHUNK = 256 * 1024  # large bodies go out in pieces, so memory per connection stays flat


def page(site: SiteConfig) -> bytes:
    """A page of exactly ``body_size`` bytes (or its head, when smaller) with a stable title."""
    head = (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{site.display_name} — lab origin"
            f"</title></head>\n<body><h1>{site.display_name}</h1>\n<p>This page is served by the lab origin "
            "for this site.</p>\n").encode()
    tail = b"</body></html>\n"
    filler = max(0, site.body_size - len(head) - len(tail))
    body = head + (b"lorem ipsum dolor sit amet " * (filler // 27 + 1))[:filler] + tail
    return body[: site.body_size] if site.body_size < len(head) + len(tail) else body


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    location: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # the scenario's, over the origin's own of the same name


class SiteHandler:
    """What one site answers: a path's own response, the normal page, or its misbehaviour for
    the clients that get it."""

    def __init__(self, site: SiteConfig) -> None:
        self.site = site
        self.normal = page(site)
        self.special = Path(site.body_path).read_bytes() if site.body_path else None
        self.paths = {p.path: (p, Path(p.body_path).read_bytes() if p.body_path else None)
                      for p in site.paths}

    def reply(self, target: str, scheme: str, peer: str | None) -> Reply:
        site = self.site
        path = target.split("?", 1)[0]
        if path in self.paths:  # the same for every client
            p, body = self.paths[path]
            headers = tuple((k, v) for k, v in p.headers)
            if p.redirect is not None:
                return Reply(p.status, b"", p.redirect["location"] or p.redirect["to"], headers)
            return Reply(p.status, b"" if bodiless(p.status) else (self.normal if body is None else body),
                         headers=headers)
        headers = tuple((k, v) for k, v in site.headers)
        if not site.misbehaves_for(peer):
            return Reply(200, self.normal, headers=headers)
        r = site.redirect
        if r is not None:
            # "/" stands for all `hops` redirects still to go; /hop/<n> for n of them.
            left = r["hops"]
            if path.startswith("/hop/") and path[5:].isdigit():
                left = int(path[5:])
            if left > 1:
                return Reply(r["status"], b"", f"{scheme}://{self.host_of()}/hop/{left - 1}", headers)
            if left == 1:
                final = r["location"] if r["location"] is not None else r["to"]
                return Reply(r["status"], b"", final if final is not None else f"{scheme}://{self.host_of()}/hop/0",
                             headers)
        body = b"" if bodiless(site.status) else (self.special if self.special is not None else self.normal)
        return Reply(site.status, body, headers=headers)

    def host_of(self) -> str:
        return self.site.name


class Address:
    """The sites served from one address (shared hosting: several), told apart by the TLS SNI
    (which certificate) and the HTTP Host header (which content). The first site declared with
    the address is its default: an unknown or missing name gets its certificate and answer, as a
    web server's default virtual host does."""

    def __init__(self, address: str, handlers: list[SiteHandler]) -> None:
        self.address = address
        self.handlers = handlers
        self.by_name = {n: h for h in handlers for n in (h.site.name, *h.site.aliases)}
        # A bad certificate is for everyone (the loader refuses it together with only_for): the
        # handshake runs in asyncio's TLS layer, before the program could look at the client.
        self.contexts = {h.site.name: _tls_context(h.site.bad_pem or h.site.pem) for h in handlers if h.site.https}
        by_name = {n: self.contexts[h.site.name] for n, h in self.by_name.items() if h.site.name in self.contexts}
        self.tls: ssl.SSLContext | None = None
        if self.contexts:
            # The first site's own context answers the handshake and, for a shared address, swaps
            # itself for the context of the name the client asks for.
            self.tls = self.contexts.get(handlers[0].site.name) or next(iter(self.contexts.values()))

            def choose(sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
                ctx = by_name.get(_normalise(server_name))
                if ctx is not None:
                    sslobj.context = ctx
            if len(handlers) > 1:
                self.tls.sni_callback = choose

    def handler(self, host: str | None) -> SiteHandler:
        return self.by_name.get(_normalise(host), self.handlers[0])

    @property
    def http(self) -> bool:
        # A port an add-on server takes from one co-hosted site is that server's for all of them.
        return all(h.site.http for h in self.handlers)

    @property
    def https(self) -> bool:
        return all(h.site.https for h in self.handlers)


def _normalise(name: str | None) -> str:
    """A Host header or SNI as a site name: no port, no trailing dot, lower case."""
    if not name:
        return ""
    if name.startswith("["):
        return name
    return name.rsplit(":", 1)[0].rstrip(".").lower()


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           where: Address, scheme: str, peer: str | None) -> None:
    conn = h11.Connection(h11.SERVER)
    name = where.address
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(65536), READ_TIMEOUT)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                host = next((v.decode("latin-1") for k, v in event.headers if k == b"host"), None)
                handler = where.handler(host)
                name = handler.site.name
                reply = handler.reply(event.target.decode("latin-1"), scheme, peer)
                await _respond(conn, writer, event, reply, alt_svc=handler.site.quic and handler.site.https)
            return
    except (h11.RemoteProtocolError, h11.LocalProtocolError, TimeoutError, ConnectionError, ssl.SSLError,
            OSError) as exc:
        log.debug("%s: %s", name, exc)
    finally:
        await close_connection(writer)


async def _respond(conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, reply: Reply,
                   alt_svc: bool = False) -> None:
    if reply.status < 200:
        # An informational answer and nothing after it: no final response ever comes.
        writer.write(conn.send(h11.InformationalResponse(status_code=reply.status, headers=list(reply.headers),
                                                         reason=reason(reply.status))))
        await writer.drain()
        return
    headers = [("Content-Type", "text/html; charset=utf-8"), ("Server", "fauxisp-origin"), ("X-Lab-Origin", "1"),
               ("Connection", "close")]
    if not bodiless(reply.status):
        headers.insert(1, ("Content-Length", str(len(reply.body))))
    if reply.location is not None:
        headers.append(("Location", reply.location))
    if alt_svc:  # the site serves HTTP/3 too (netlab.services.h3): how browsers learn of it
        headers.append(("Alt-Svc", h3.ALT_SVC))
    own = {k.lower() for k, _ in reply.headers}
    headers = [(k, v) for k, v in headers if k.lower() not in own] + list(reply.headers)
    writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers, reason=reason(reply.status))))
    if request.method != b"HEAD" and not bodiless(reply.status):
        view = memoryview(reply.body)
        for i in range(0, len(view), WRITE_CHUNK):
            # h11 frames any bytes-like object; its hints say bytes, but a slice of the view copies nothing
            writer.write(conn.send(h11.Data(data=view[i:i + WRITE_CHUNK])))  # type: ignore[arg-type]
            await writer.drain()
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


def _tls_context(pem: str) -> ssl.SSLContext:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pem)
    return tls


def addresses(sites: list[SiteConfig]) -> list[Address]:
    """Every address of the lab's sites with the sites it serves, in the scenario's order."""
    handlers = [SiteHandler(s) for s in sites]
    by_addr: dict[str, list[SiteHandler]] = {}
    for h in handlers:
        for a in h.site.addresses:
            by_addr.setdefault(a, []).append(h)
    return [Address(a, hs) for a, hs in by_addr.items()]


def site_config(d: dict[str, Any]) -> SiteConfig:
    """One site of origin.json (tests build sites this way)."""
    return SiteConfig.from_dict(d)


async def serve(config: OriginConfig) -> None:
    sites = config.sites
    servers: list[Listening] = []
    for where in addresses(sites):
        async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter, a: Address = where) -> None:
            # Nagle plus delayed ACK stalls small TLS 1.3 writes by ~40 ms: send at once.
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peername = w.get_extra_info("peername")
            scheme = "https" if w.get_extra_info("sslcontext") is not None else "http"
            await serve_connection(r, w, a, scheme, peername[0] if peername else None)

        if where.http:
            servers.append(await asyncio.start_server(on_connect, sock=listener(where.address, 80)))
        if where.https and where.tls is not None:
            # The TLS handshake runs in the connection's task, not in accept: one slow client
            # cannot hold up the others.
            servers.append(await asyncio.start_server(on_connect, sock=listener(where.address, 443), ssl=where.tls,
                                                      ssl_handshake_timeout=READ_TIMEOUT))
        quic = [h.site for h in where.handlers if h.site.quic and h.site.https]
        if quic and where.https:  # HTTP/3 beside HTTPS: same certificate and answers (netlab.services.h3)
            certs = [([q.name, *q.aliases], q.bad_pem or q.pem) for q in quic]
            servers.append(await h3.serve_site(where.address, certs, where.handler))
    log.info("serving %d sites", len(sites))
    await serve_until_stopped(servers, config.ready_file)


def main(argv: list[str] | None = None) -> int:
    return service_main(argv, name="origin", parse=OriginConfig.from_json, serve=serve,
                        description="Serve every site of the lab internet (HTTP and HTTPS).")


if __name__ == "__main__":
    raise SystemExit(main())
