"""What the lab's asyncio servers (origin, proxy, DoT, blockpage, interceptor) share: listening
sockets, answering a fixed page, and running until the backend stops them (SIGTERM) after saying
they are ready (closing a connection is netlab.aio's, shared with the probes)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from netlab import gc_policy

HEAD_TIMEOUT = 10.0  # how long a client may take to send its request head (or ClientHello)
MAX_HEAD = 16 * 1024


def listener(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def answer_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, page: bytes) -> None:
    """Read the client's request head (to its blank line, MAX_HEAD bytes or the end of its stream,
    within HEAD_TIMEOUT) and answer ``page``, whatever was asked: a blockpage server's answer, or an
    interceptor's page for a rule that has one. The caller closes the connection."""
    head = b""
    async with asyncio.timeout(HEAD_TIMEOUT):
        while b"\r\n\r\n" not in head and len(head) < MAX_HEAD:
            chunk = await reader.read(4096)
            if not chunk:
                break
            head += chunk
    writer.write(page)
    await writer.drain()


class Listening(Protocol):
    """A server serve_until_stopped closes: an asyncio.Server, or aioquic's QuicServer (HTTP/3)."""

    def close(self) -> None: ...


async def serve_until_stopped(servers: Sequence[Listening], ready_file: str | None = None) -> None:
    """Write ``ready_file`` (the backend's readiness check), then serve until SIGTERM or SIGINT."""
    if ready_file:
        Path(ready_file).write_text("ready\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


Config = TypeVar("Config")


def service_main(argv: list[str] | None, *, name: str, description: str, parse: Callable[[str], Config],
                 serve: Callable[[Config], Coroutine[Any, Any, None]]) -> int:
    """The command line of a lab service (`python3 -m netlab.services.NAME --config FILE`): read the
    config the lab compiler wrote with ``parse``, log as ``NAME:``, run ``serve`` until stopped."""
    parser = argparse.ArgumentParser(prog=f"python3 -m netlab.services.{name}", description=description)
    parser.add_argument("--config", required=True, help=f"{name}.json written by the lab compiler")
    parser.add_argument("--verbose", action="store_true", help="log every connection (debug level)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=f"{name}: %(message)s")
    gc_policy.tune()
    asyncio.run(serve(parse(Path(args.config).read_text())))
    return 0
