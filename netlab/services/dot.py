"""DNS over TLS (RFC 7858) for the sites of the lab internet: port 853 of every site's address.

One listener on 0.0.0.0:853 in the internet host, which owns the whole lab range (AnyIP): a
connection's local address says which site it reached, and the TLS handshake then presents that
site's certificate from the lab CA. Each query (two-byte length prefix, RFC 1035 4.2.2) is
forwarded as it is over UDP to the lab's public resolver (or the root server when the scenario
has none), and the answer is sent back the same way. Censorship of DoT is then the ISP's: SNI
rules on the ClientHello, or address and port rules on 853.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import socket
import ssl
import struct
from pathlib import Path

from netlab.services._serve import listener, serve_until_stopped

log = logging.getLogger("dot")
DOT_PORT = 853
IDLE_TIMEOUT = 10.0
UPSTREAM_TIMEOUT = 3.0


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def forward(query: bytes, upstream: tuple[str, int]) -> bytes:
    """One query over UDP to the upstream resolver; its answer (same transaction id)."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Upstream, remote_addr=upstream)
    try:
        transport.sendto(query)
        async with asyncio.timeout(UPSTREAM_TIMEOUT):
            while True:
                answer = await proto.answer
                if answer[:2] == query[:2]:
                    return answer
                proto.answer = loop.create_future()
    finally:
        transport.close()


class DotServer:
    def __init__(self, sites: dict[str, str], upstream: tuple[str, int]) -> None:
        self.sites = sites  # address -> PEM (certificate chain and key)
        self.upstream = upstream
        self._contexts: dict[str, ssl.SSLContext] = {}

    def context(self, address: str) -> ssl.SSLContext | None:
        """The TLS context of the site at ``address``, made on first use (start-up stays O(1))."""
        if address not in self._contexts:
            pem = self.sites.get(address)
            if pem is None:
                return None
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(pem)
            ctx.set_alpn_protocols(["dot"])
            self._contexts[address] = ctx
        return self._contexts[address]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        local = writer.get_extra_info("sockname")[0]
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            ctx = self.context(local)
            if ctx is None:
                return  # not a site's address: nothing serves DoT there
            await writer.start_tls(ctx, ssl_handshake_timeout=IDLE_TIMEOUT)
            while True:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    head = await reader.readexactly(2)
                    query = await reader.readexactly(struct.unpack("!H", head)[0])
                answer = await forward(query, self.upstream)
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ssl.SSLError, OSError) as exc:
            log.debug("%s: %s", local, exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
                await writer.wait_closed()


async def serve(config: dict) -> None:
    server = DotServer(config["sites"], (config["upstream"], 53))
    tcp = await asyncio.start_server(server.handle, sock=listener("0.0.0.0", DOT_PORT))
    log.info("DNS over TLS for %d sites, upstream %s", len(server.sites), config["upstream"])
    await serve_until_stopped([tcp])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DNS over TLS on port 853 of every site of the lab internet.")
    parser.add_argument("--config", required=True, help="dot.json written by netlab.compile.dot")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="dot: %(message)s")
    asyncio.run(serve(json.loads(Path(args.config).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
