"""What the lab's asyncio servers (origin, proxy, DoT, blockpage, interceptor) share: listening
sockets, answering a fixed page, and running until the backend stops them (SIGTERM) after saying
they are ready."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

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
