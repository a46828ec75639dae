"""What a probe package's server program (netlab.addons) gets from the lab: its configuration, its
sites' TLS contexts, listening sockets, a DNS forwarder to the lab's resolvers, and the run loop.

A server is started as ``python3 -m MODULE --config FILE`` in the lab internet, which owns every
site's address (AnyIP): one listener on ``0.0.0.0:PORT`` serves them all, and a connection's local
address says which site it reached. Standard library only, besides the lab's own modules, so the
program runs in a container lab as it does in namespaces::

    from netlab.services.addon import main_for

    async def serve(config):        # a ServerConfig
        ...                         # start asyncio servers on config.listener()
        await config.serve_until_stopped([server])

    if __name__ == "__main__":
        raise SystemExit(main_for(serve))
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netlab.services._serve import listener, serve_until_stopped

UPSTREAM_TIMEOUT = 3.0


@dataclass(frozen=True)
class SiteEntry:
    name: str
    address: str
    pem: str  # the site's lab certificate chain and key


@dataclass
class ServerConfig:
    """The file netlab.addons.addon_additions writes for one server."""

    name: str
    port: int
    upstream: str  # the lab internet's recursive resolver to ask
    sites: list[SiteEntry]
    ready_file: str | None = None
    public_resolver: str | None = None
    root_dns: str | None = None
    ca: str | None = None
    _contexts: dict[str, ssl.SSLContext] = field(default_factory=dict, repr=False)

    def to_json(self) -> str:
        """The file's text, as netlab.addons.addon_additions writes it (``load`` reads it)."""
        return json.dumps({
            "name": self.name, "port": self.port, "ready_file": self.ready_file, "upstream": self.upstream,
            "public_resolver": self.public_resolver, "root_dns": self.root_dns, "ca": self.ca,
            "sites": [{"name": s.name, "address": s.address, "pem": s.pem} for s in self.sites],
        }, indent=1) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> ServerConfig:
        doc = json.loads(Path(path).read_text())
        return cls(name=doc["name"], port=int(doc["port"]), upstream=doc["upstream"],
                   sites=[SiteEntry(s["name"], s["address"], s["pem"]) for s in doc["sites"]],
                   ready_file=doc.get("ready_file"), public_resolver=doc.get("public_resolver"),
                   root_dns=doc.get("root_dns"), ca=doc.get("ca"))

    def site_at(self, address: str) -> SiteEntry | None:
        """The site whose address a connection reached (its local address), or None."""
        return next((s for s in self.sites if s.address == address), None)

    def tls_context(self, address: str, alpn: list[str] | None = None) -> ssl.SSLContext | None:
        """The server-side TLS context of the site at ``address`` (its lab certificate), made on
        first use so start-up stays quick with many sites; None for an address that is no site's."""
        if address not in self._contexts:
            site = self.site_at(address)
            if site is None:
                return None
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(site.pem)
            if alpn:
                ctx.set_alpn_protocols(alpn)
            self._contexts[address] = ctx
        return self._contexts[address]

    def listener(self, address: str = "0.0.0.0") -> socket.socket:
        """A listening socket on port ``port``: of every address of the lab internet by default, or
        of one site's address (needed on 80/443, where the origin keeps the other sites)."""
        return listener(address, self.port)

    async def serve_until_stopped(self, servers: list[asyncio.Server]) -> None:
        """Say ready (the ready file, for ``ready="file"``), then serve until the backend stops us."""
        await serve_until_stopped(servers, self.ready_file)

    async def resolve(self, query: bytes) -> bytes:
        """A DNS query (wire format) answered by the lab's resolver ``upstream``."""
        return await forward_dns(query, (self.upstream, 53))


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def forward_dns(query: bytes, upstream: tuple[str, int]) -> bytes:
    """One query over UDP to ``upstream``; its answer (the one with the query's transaction id)."""
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


def main_for(serve: Callable[[ServerConfig], Coroutine[Any, Any, None]], argv: list[str] | None = None) -> int:
    """The command line of a server program: ``--config FILE [--verbose]``, then ``serve(config)``."""
    parser = argparse.ArgumentParser(description="An add-on server of the lab internet (netlab.addons).")
    parser.add_argument("--config", required=True, help="the JSON file netlab.addons wrote for this server")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    config = ServerConfig.load(args.config)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=f"{config.name}: %(message)s")
    asyncio.run(serve(config))
    return 0
