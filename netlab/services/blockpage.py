"""An ISP's blockpage server: where its resolver sends the names it blocks (`{answer: IP,
blockpage: ...}`), as Iran's resolvers answer 10.10.34.34.

    python3 -m netlab.services.blockpage --config LAB/<isp>/blockpage.json

Runs in the ISP's router, which holds each such address on its loopback, so only that ISP's
clients reach it. On port 80 of each address it reads the request head and answers the page the
scenario declares (netlab.blockpage renders it), whatever was asked, then closes the connection;
nothing listens on 443 (a client there gets a TCP reset, as from most real blockpage servers).
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from netlab.aio import close_connection
from netlab.services._serve import answer_page, listener, serve_until_stopped, service_main
from netlab.services.configs import BlockpageConfig

log = logging.getLogger("blockpage")


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, page: bytes) -> None:
    try:
        await answer_page(reader, writer, page)
    except (TimeoutError, ConnectionError, OSError) as exc:
        log.debug("blockpage: %s", exc)
    finally:
        await close_connection(writer)


async def serve(config: BlockpageConfig) -> None:
    servers = []
    for address, page in config.pages.items():
        servers.append(await asyncio.start_server(partial(answer, page=page), sock=listener(address, 80)))
    await serve_until_stopped(servers, config.ready_file)


def main(argv: list[str] | None = None) -> int:
    return service_main(argv, name="blockpage", parse=BlockpageConfig.from_json, serve=serve,
                        description="An ISP's blockpage server (HTTP on port 80).")


if __name__ == "__main__":
    raise SystemExit(main())
