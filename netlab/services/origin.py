"""Origin servers for every site of the lab internet: HTTP on :80 and HTTPS on :443 of each
site's address, certificates from the lab CA. One asyncio process serves all sites.

HTTP/1.1 framing comes from h11 (the parser behind httpx); every response closes the connection,
which keeps the server simple and the probes' measurements independent of each other.

A site can misbehave on its own (scenario.md): a bad certificate, redirects, another status or
body. With ``only_for`` only clients from those ISPs' access networks see it (server-side
blocking); everyone else gets the normal page. States ``refused`` and ``timeout`` are packet
filter rules of the lab internet (netlab.compile.firewall.site_ruleset), not this program's job.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import socket
import ssl
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import h11

from netlab.services._serve import listener, serve_until_stopped
from netlab.target import display_name

log = logging.getLogger("origin")
READ_TIMEOUT = 10.0
WRITE_CHUNK = 256 * 1024  # large bodies go out in pieces, so memory per connection stays flat


@dataclass(frozen=True)
class SiteConfig:
    name: str
    address: str
    pem: str
    body_size: int
    bad_pem: str | None = None
    https: bool = True
    http: bool = True  # False: an add-on server (netlab.addons) answers on port 80 of this site
    status: int = 200
    body_path: str | None = None
    redirect: dict | None = None
    only_for: list[str] = field(default_factory=list)

    @property
    def display_name(self) -> str:
        return display_name(self.name)

    def misbehaves_for(self, peer: str | None) -> bool:
        """Does the client at ``peer`` get the misbehaviour? Everyone does, unless only_for narrows it."""
        if not self.only_for:
            return True
        try:
            ip = IPv4Address(peer or "")
        except ValueError:
            return False
        return any(ip in IPv4Network(n) for n in self.only_for)


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


class SiteHandler:
    """What one site answers: the normal page, or its misbehaviour for the clients that get it."""

    def __init__(self, site: SiteConfig) -> None:
        self.site = site
        self.normal = page(site)
        self.special = Path(site.body_path).read_bytes() if site.body_path else None

    def reply(self, target: str, scheme: str, peer: str | None) -> Reply:
        site = self.site
        if not site.misbehaves_for(peer):
            return Reply(200, self.normal)
        r = site.redirect
        if r is not None:
            path = target.split("?", 1)[0]
            # "/" stands for all `hops` redirects still to go; /hop/<n> for n of them.
            left = r["hops"]
            if path.startswith("/hop/") and path[5:].isdigit():
                left = int(path[5:])
            if left > 1:
                return Reply(r["status"], b"", f"{scheme}://{self.host_of()}/hop/{left - 1}")
            if left == 1:
                final = r["location"] if r["location"] is not None else r["to"]
                return Reply(r["status"], b"", final if final is not None else f"{scheme}://{self.host_of()}/hop/0")
        return Reply(site.status, self.special if self.special is not None else self.normal)

    def host_of(self) -> str:
        return self.site.name


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           handler: SiteHandler, scheme: str, peer: str | None) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(65536), READ_TIMEOUT)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                reply = handler.reply(event.target.decode("latin-1"), scheme, peer)
                await _respond(conn, writer, event, reply)
            return
    except (h11.RemoteProtocolError, TimeoutError, ConnectionError, ssl.SSLError, OSError) as exc:
        log.debug("%s: %s", handler.site.name, exc)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            await writer.wait_closed()


async def _respond(conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, reply: Reply) -> None:
    headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(reply.body))),
               ("Server", "censorlab-origin"), ("X-Lab-Origin", "1"), ("Connection", "close")]
    if reply.location is not None:
        headers.append(("Location", reply.location))
    writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)))
    if request.method != b"HEAD":
        view = memoryview(reply.body)
        for i in range(0, len(view), WRITE_CHUNK):
            writer.write(conn.send(h11.Data(data=view[i:i + WRITE_CHUNK])))
            await writer.drain()
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


def _tls_context(pem: str) -> ssl.SSLContext:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pem)
    return tls


async def serve(config: dict) -> None:
    sites = [SiteConfig(**s) for s in config["sites"]]
    servers = []
    for site in sites:
        handler = SiteHandler(site)
        # A bad certificate is for everyone (the loader refuses it together with only_for): the
        # handshake runs in asyncio's TLS layer, before the program could look at the client.
        tls = _tls_context(site.bad_pem or site.pem)

        async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter, h: SiteHandler = handler) -> None:
            # Nagle plus delayed ACK stalls small TLS 1.3 writes by ~40 ms: send at once.
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peername = w.get_extra_info("peername")
            scheme = "https" if w.get_extra_info("sslcontext") is not None else "http"
            await serve_connection(r, w, h, scheme, peername[0] if peername else None)

        if site.http:
            servers.append(await asyncio.start_server(on_connect, sock=listener(site.address, 80)))
        if site.https:
            # The TLS handshake runs in the connection's task, not in accept: one slow client
            # cannot hold up the others.
            servers.append(await asyncio.start_server(on_connect, sock=listener(site.address, 443), ssl=tls,
                                                      ssl_handshake_timeout=READ_TIMEOUT))
    log.info("serving %d sites", len(sites))
    await serve_until_stopped(servers, config.get("ready_file"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve every site of the lab internet (HTTP and HTTPS).")
    parser.add_argument("--config", required=True, help="origin.json written by the lab compiler")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="origin: %(message)s")
    config = json.loads(Path(args.config).read_text())
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
