"""Origin servers for every site of the lab internet: HTTP on :80 and HTTPS on :443 of each
site's address, certificates from the lab CA. One asyncio process serves all sites.

HTTP/1.1 framing comes from h11 (the parser behind httpx); every response closes the connection,
which keeps the server simple and the probes' measurements independent of each other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import h11

from netlab.target import display_name

log = logging.getLogger("origin")
READ_TIMEOUT = 10.0


@dataclass(frozen=True)
class SiteConfig:
    name: str
    address: str
    pem: str
    body_size: int

    @property
    def display_name(self) -> str:
        return display_name(self.name)


def page(site: SiteConfig) -> bytes:
    """A page of exactly ``body_size`` bytes (or its head, when smaller) with a stable title."""
    head = (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{site.display_name} — lab origin"
            f"</title></head>\n<body><h1>{site.display_name}</h1>\n<p>This page is served by the lab origin "
            "for this site.</p>\n").encode()
    tail = b"</body></html>\n"
    filler = max(0, site.body_size - len(head) - len(tail))
    body = head + (b"lorem ipsum dolor sit amet " * (filler // 27 + 1))[:filler] + tail
    return body[: site.body_size] if site.body_size < len(head) + len(tail) else body


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           site: SiteConfig, body: bytes) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(65536), READ_TIMEOUT)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                await _respond(conn, writer, event, body)
            return
    except (h11.RemoteProtocolError, TimeoutError, ConnectionError, ssl.SSLError, OSError) as exc:
        log.debug("%s: %s", site.name, exc)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            await writer.wait_closed()


async def _respond(conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request,
                   body: bytes) -> None:
    headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body))),
               ("Server", "censorlab-origin"), ("X-Lab-Origin", "1"), ("Connection", "close")]
    writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
    if request.method != b"HEAD":
        writer.write(conn.send(h11.Data(data=body)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


def _listener(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(config: dict) -> None:
    sites = [SiteConfig(**s) for s in config["sites"]]
    servers = []
    for site in sites:
        body = page(site)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(site.pem)

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: SiteConfig = site,
                          b: bytes = body) -> None:
            # Nagle plus delayed ACK stalls small TLS 1.3 writes by ~40 ms: send at once.
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await serve_connection(r, w, s, b)

        servers.append(await asyncio.start_server(handler, sock=_listener(site.address, 80)))
        # The TLS handshake runs in the connection's task, not in accept: one slow client
        # cannot hold up the others.
        servers.append(await asyncio.start_server(handler, sock=_listener(site.address, 443), ssl=tls,
                                                  ssl_handshake_timeout=READ_TIMEOUT))
    log.info("serving %d sites", len(sites))
    ready = config.get("ready_file")
    if ready:
        Path(ready).write_text("ready\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


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
