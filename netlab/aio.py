"""asyncio helpers the lab's services and the probes share."""

from __future__ import annotations

import asyncio


async def close_connection(writer: asyncio.StreamWriter) -> None:
    """Close a connection and wait until it is closed, whatever it ended with. An error it ended
    with (a reset, a TLS alert) comes back here and its traceback is dropped: the stream's reader
    keeps that error and the traceback the reader's frames, a reference cycle that would hold the
    connection's buffers (~100 KB with TLS) until the collector's rare full pass (netlab.gc_policy).
    Resets are common on both sides: a client that closes with the server's session tickets unread
    sends one, and a censor injects them."""
    writer.close()
    try:
        await writer.wait_closed()
    except OSError as exc:  # ConnectionError and ssl.SSLError among them
        exc.__traceback__ = None
