"""Byte streams the probes talk over: plain TCP, and TLS layered on an open TCP stream.

Both have the same small interface (``read``, ``write``, ``close``, ``address``), so the HTTP
step does not care which one it gets.

TLS is done with ``ssl.SSLObject`` over memory buffers instead of ``asyncio``'s ``start_tls``:
that way the probe still holds the TLS object after a failed certificate check, and can record
the certificate chain the server sent -- which is exactly the evidence an interception
(``ssl_invalid_hostname``, ``ssl_unknown_authority``) measurement needs.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import TYPE_CHECKING, Protocol

from netlab.aio import close_connection
from probes.failures import failure_string
from probes.safety import ensure_address_allowed

if TYPE_CHECKING:
    from probes.trace import Trace

READ_SIZE = 64 * 1024


class ByteStream(Protocol):
    address: str

    async def read(self, max_bytes: int = READ_SIZE) -> bytes:
        """Return up to ``max_bytes``; ``b""`` at end of stream."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


def endpoint(ip: str, port: int) -> str:
    """OONI's ``address`` form: ``1.2.3.4:443`` or ``[::1]:443``."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class TcpStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str) -> None:
        self._reader = reader
        self._writer = writer
        self.address = address
        #: Set by ``watch``: reads and writes then become OONI network events of this connection.
        self._trace: Trace | None = None
        self._transaction_id = 0
        self._tags: list[str] = []

    def watch(self, trace: Trace, transaction_id: int, tags: list[str]) -> None:
        """Record this stream's reads and writes (TLS records included) in ``trace``."""
        self._trace, self._transaction_id, self._tags = trace, transaction_id, list(tags)

    @classmethod
    async def connect(cls, ip: str, port: int) -> TcpStream:
        """Connect to ``ip:port``. The caller bounds the time with its own timeout."""
        ensure_address_allowed(ip, "TCP connect")
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET  # ip is a checked literal
        # Build the socket by hand so that no name resolution can ever happen on this path.
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (ip, port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=READ_SIZE)
        except BaseException:
            sock.close()
            raise
        return cls(reader, writer, endpoint(ip, port))

    async def read(self, max_bytes: int = READ_SIZE) -> bytes:
        if self._trace is None:
            return await self._reader.read(max_bytes)
        t0 = self._trace.now()
        try:
            data = await self._reader.read(max_bytes)
        except Exception as exc:
            self._io_event("read", t0, exc, 0)
            raise
        self._io_event("read", t0, None if data else EOFError(), len(data))
        return data

    async def write(self, data: bytes) -> None:
        if self._trace is None:
            self._writer.write(data)
            await self._writer.drain()
            return
        t0 = self._trace.now()
        try:
            self._writer.write(data)
            await self._writer.drain()
        except Exception as exc:
            self._io_event("write", t0, exc, 0)
            raise
        if data:  # httpcore's empty writes send nothing: no event
            self._io_event("write", t0, None, len(data))

    def _io_event(self, operation: str, t0: float, exc: BaseException | None, num_bytes: int) -> None:
        assert self._trace is not None
        failure = None if exc is None else failure_string(exc)  # EOFError: OONI's eof_error
        self._trace.event(operation, self.address, self._transaction_id, t0=t0, failure=failure,
                          num_bytes=num_bytes, tags=self._tags)

    async def close(self) -> None:
        # The peer may already have reset the connection: it is closed either way.
        await close_connection(self._writer)


class TlsStream:
    """A TLS client session over an already connected ``TcpStream``."""

    def __init__(self, raw: TcpStream, context: ssl.SSLContext, server_name: str) -> None:
        self._raw = raw
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_name)
        self.address = raw.address

    async def handshake(self) -> None:
        """Run the handshake. The caller bounds the time with its own timeout.

        Raises the ssl module's errors (certificate verification, alerts, ``SSLEOFError`` when the
        peer closes) or the socket's (``ConnectionResetError``, ...).
        """
        while True:
            try:
                self.ssl_object.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                await self._receive()
        await self._flush()

    def peer_chain_der(self) -> list[bytes]:
        """DER certificates the server sent, leaf first; available even after a failed verification."""
        sslobj = self.ssl_object._sslobj  # type: ignore[attr-defined]
        # get_unverified_chain() is public only from Python 3.13; it exists privately since 3.10.
        getter = getattr(sslobj, "get_unverified_chain", None)
        if getter is not None:
            chain = getter() or []
            return [cert.public_bytes(ssl._ssl.ENCODING_DER) for cert in chain]  # type: ignore[attr-defined]
        leaf = self.ssl_object.getpeercert(binary_form=True)
        return [leaf] if leaf else []

    async def read(self, max_bytes: int = READ_SIZE) -> bytes:
        while True:
            try:
                return self._and_buffered(self.ssl_object.read(max_bytes), max_bytes)
            except ssl.SSLWantReadError:
                await self._flush()  # TLS 1.3 may need to answer, e.g. a key update
                await self._receive()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                # close_notify, or a bare TCP close: many servers skip close_notify. Report end of
                # stream and let the HTTP parser decide whether the message was complete.
                return b""

    def _and_buffered(self, data: bytes, max_bytes: int) -> bytes:
        """``data`` and the plaintext of the records already received after it, up to ``max_bytes``.
        ``SSLObject.read`` gives one record (at most 16 KiB) a call: without this a 64 KiB body took
        a round of the HTTP parser and the event loop per record, though the TCP read brought all."""
        if not data or not self._incoming.pending:
            return data
        parts = [data]
        room = max_bytes - len(data)
        while room > 0 and self._incoming.pending:
            try:
                more = self.ssl_object.read(room)
            except ssl.SSLError:  # want-read (a partial record), close_notify, EOF: the next read() tells
                break
            if not more:
                break
            parts.append(more)
            room -= len(more)
        return b"".join(parts)

    async def write(self, data: bytes) -> None:
        self.ssl_object.write(data)
        await self._flush()

    async def close(self) -> None:
        await self._raw.close()

    async def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending:
            await self._raw.write(pending)

    async def _receive(self) -> None:
        data = await self._raw.read(READ_SIZE)
        if data:
            self._incoming.write(data)
        else:
            # The ssl module then raises SSLEOFError from the pending operation.
            self._incoming.write_eof()
