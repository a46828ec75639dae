"""An ISP's blockpage server: where its resolver sends the names it blocks (`{answer: IP,
blockpage: ...}`), as Iran's resolvers answer 10.10.34.34.

    python3 -m netlab.services.blockpage --config LAB/<isp>/blockpage.json

Runs in the ISP's router, which holds each such address on its loopback, so only that ISP's
clients reach it. On port 80 of each address it reads the request head and answers the page the
scenario declares (netlab.blockpage renders it), whatever was asked, then closes the connection;
nothing listens on 443 (a client there gets a TCP reset, as from most real blockpage servers).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

from netlab.services._serve import listener, serve_until_stopped

log = logging.getLogger("blockpage")
HEAD_TIMEOUT = 10.0
MAX_HEAD = 16 * 1024


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, page: bytes) -> None:
    try:
        head = b""
        async with asyncio.timeout(HEAD_TIMEOUT):
            while b"\r\n\r\n" not in head and len(head) < MAX_HEAD:
                chunk = await reader.read(4096)
                if not chunk:
                    break
                head += chunk
        writer.write(page)
        await writer.drain()
    except (TimeoutError, ConnectionError, OSError) as exc:
        log.debug("blockpage: %s", exc)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def serve(config: dict[str, Any]) -> None:
    servers = []
    for address, encoded in config["pages"].items():
        page = base64.b64decode(encoded)
        servers.append(await asyncio.start_server(partial(answer, page=page), sock=listener(address, 80)))
    await serve_until_stopped(servers, config.get("ready_file"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="An ISP's blockpage server (HTTP on port 80).")
    parser.add_argument("--config", required=True, help="blockpage.json written by the lab compiler")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="blockpage: %(message)s")
    asyncio.run(serve(json.loads(Path(args.config).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
