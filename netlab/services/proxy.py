"""An ISP's transparent proxy: what a DNS hijack can point clients at (OONI's QA "ISP proxy").

    python3 -m netlab.services.proxy --config LAB/inet/proxy.json

Listens on :80 and :443 of every ISP proxy address. Plain HTTP is relayed to the site named by
the request's Host header, TLS to the site named by the ClientHello's SNI (the bytes pass
through untouched, so the client still validates the real site's certificate). A name that is
no site of the lab gets the connection closed: the proxy never leaves the lab.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from netlab.aio import close_connection
from netlab.services._parsers import DONE, NEED_MORE, parse_client_hello, parse_http_host
from netlab.services._relay import CHUNK, pipe
from netlab.services._serve import listener, serve_until_stopped, service_main
from netlab.services.configs import ProxyConfig

log = logging.getLogger("proxy")
HEAD_TIMEOUT = 10.0  # how long a client may take to show its Host header or ClientHello
MAX_HEAD = 16 * 1024


async def _first_bytes(reader: asyncio.StreamReader, tls: bool) -> tuple[bytes, str | None]:
    """Read until the Host header (HTTP) or the SNI (TLS) is known; (bytes read, name or None)."""
    data = b""
    async with asyncio.timeout(HEAD_TIMEOUT):
        while len(data) < MAX_HEAD:
            chunk = await reader.read(CHUNK)
            if not chunk:
                return data, None
            data += chunk
            parsed = parse_client_hello(data) if tls else parse_http_host(data)
            if parsed.status == NEED_MORE:
                continue
            return data, parsed.value if parsed.status == DONE else None
    return data, None


class Proxy:
    def __init__(self, sites: dict[str, str]) -> None:
        self.sites = sites  # site name (IDNA A-label) -> address

    def upstream(self, name: str | None) -> str | None:
        if not name:
            return None
        return self.sites.get(name.split(":", 1)[0].rstrip(".").lower())

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        up_writer = None
        try:
            head, name = await _first_bytes(reader, tls=port == 443)
            address = self.upstream(name)
            if address is None:
                log.info("no lab site for %r on :%d: closing", name, port)
                return
            up_reader, up_writer = await asyncio.open_connection(address, port)
            up_writer.write(head)
            await up_writer.drain()
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.debug("relay failed: %s", exc)
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    await close_connection(w)


async def serve(config: ProxyConfig) -> None:
    proxy = Proxy(config.sites)
    servers = []
    for address in config.listen:
        for port in (80, 443):
            servers.append(await asyncio.start_server(partial(proxy.handle, port=port), sock=listener(address, port)))
    await serve_until_stopped(servers, config.ready_file)


def main(argv: list[str] | None = None) -> int:
    return service_main(argv, name="proxy", parse=ProxyConfig.from_json, serve=serve,
                        description="An ISP transparent proxy (HTTP by Host, TLS by SNI).")


if __name__ == "__main__":
    raise SystemExit(main())
