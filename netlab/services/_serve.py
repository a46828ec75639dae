"""What the lab's asyncio servers (origin, proxy, DoT) share: listening sockets, and running until
the backend stops them (SIGTERM) after saying they are ready."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


def listener(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


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
