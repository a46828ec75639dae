"""A client that resets its connection right after the TLS handshake (as the web probe's extra
handshake on 443 beside an http:// fetch does: closing with the server's session tickets unread
sends a reset) leaves no reference cycle in the origin: the cycle held each connection's TLS
buffers until the collector's rare full pass, and the lab origin grew to 430 MiB on 20,000
measurements."""

from __future__ import annotations

import asyncio
import gc
import ssl
from pathlib import Path

import trustme

from netlab.services.configs import SiteConfig
from netlab.services.origin import Address, SiteHandler, serve_connection


def test_reset_after_handshake_leaves_no_garbage(tmp_path: Path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "site.pem"
    ca.issue_cert("site.test").private_key_and_cert_chain_pem.write_to_path(str(pem))
    where = Address("127.0.0.1", [SiteHandler(SiteConfig(name="site.test", pem=str(pem), body_size=1000))])
    client = ssl.create_default_context()
    ca.configure_trust(client)

    async def main() -> list[object]:
        finished = asyncio.Event()

        async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await serve_connection(r, w, where, "https", None)
            finished.set()

        assert where.tls is not None
        server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=where.tls)
        port = server.sockets[0].getsockname()[1]
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(5):
                finished.clear()
                _, w = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="site.test")
                w.transport.abort()  # a reset, as a close with unread data sends
                await asyncio.wait_for(finished.wait(), 5)
            gc.collect()
            return [o for o in gc.garbage if isinstance(o, (ConnectionError, ssl.SSLObject, asyncio.StreamReader))]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            server.close()

    assert asyncio.run(main()) == []
