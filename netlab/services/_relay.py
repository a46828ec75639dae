"""Relaying bytes between two stream connections: what the ISP's transparent proxy
(netlab.services.proxy) and the TLS interceptor (netlab.services.intercept) share."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

CHUNK = 64 * 1024


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Copy ``reader`` to ``writer`` until end of stream, then half-close ``writer``. True when the
    reading side ended with a reset (so a relay can pass the reset on, see ``abort``)."""
    reset = False
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except ConnectionResetError:
        reset = True
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if not reset and writer.can_write_eof():
                writer.write_eof()
    return reset


def abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0): what a relay does to one side when the other reset it."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
