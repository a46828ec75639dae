"""An ISP's TLS interceptor: the DPI action ``intercept`` (Kazakhstan 2019's national root CA).

    python3 -m netlab.services.intercept --config LAB/<isp>/intercept.json

Runs in the ISP router. The router's nat rules (netlab.compile.intercept) redirect the client TCP
flows an ``intercept`` rule may concern (its server addresses, port 443 unless it names one) to
this program's port; the original destination comes from conntrack (``SO_ORIGINAL_DST``). For
each connection it peeks at the ClientHello (``MSG_PEEK``: the bytes stay queued, and the
project's ClientHello parser reads the SNI), then:

- the SNI matches an intercept rule (first match in rule order): it completes the handshake
  itself with a certificate for that name issued by the ISP's own CA (not trusted by the lab's
  clients: they fail with ``ssl_unknown_authority``). Then it either serves the rule's page to
  the first request, or opens its own TLS connection to the original destination (same SNI) and
  relays the decrypted bytes both ways;
- otherwise it splices: a plain TCP connection to the original destination, the client's bytes
  passed on untouched (ClientHello first). That connection carries ``splice_mark`` (SO_MARK), so
  the router queues it to the DPI middlebox like a forwarded client flow and the ISP's other DPI
  rules act on it; a reset from there is passed on to the client as a reset, an end of stream
  as an end of stream.

Onward connections leave from the router's access address, inside the ISP's client network, so
sites that treat the ISP's clients differently (``only_for``) still do. Logs go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from pathlib import Path

from netlab.aio import close_connection
from netlab.dnsname import wire_name
from netlab.services._parsers import DONE, NEED_MORE, parse_client_hello
from netlab.services._relay import abort, pipe
from netlab.services._serve import (
    HEAD_TIMEOUT,
    MAX_HEAD,
    answer_page,
    listener,
    serve_until_stopped,
    service_main,
)
from netlab.services.configs import InterceptConfig, InterceptRule

log = logging.getLogger("intercept")
PEEK_POLL = 0.005  # a partial ClientHello stays queued (peeked), so readiness cannot tell more came
CONNECT_TIMEOUT = 10.0
LINGER = 30.0  # after one direction of a relay ends, how long the other may go on
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h (on level SOL_IPV6)


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where the client meant to connect before the router's redirect: conntrack's original
    destination, a struct sockaddr_in, or (dual stack) a sockaddr_in6 for an IPv6 flow."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), struct.unpack("!H", raw[2:4])[0]
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


async def _readable(sock: socket.socket, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def _wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), _wake)
    try:
        await asyncio.wait_for(ready, timeout)
    finally:
        loop.remove_reader(sock.fileno())


async def peek_server_name(sock: socket.socket) -> str | None:
    """The SNI of the client's ClientHello, read without taking the bytes off the socket; None
    when the client sends something else, no name, or nothing in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HEAD_TIMEOUT
    seen = -1
    while (remaining := deadline - loop.time()) > 0:
        await _readable(sock, remaining)
        data = sock.recv(MAX_HEAD, socket.MSG_PEEK)
        if not data:
            return None
        parsed = parse_client_hello(data)
        if parsed.status != NEED_MORE:
            return wire_name(parsed.value) if parsed.status == DONE and parsed.value else None
        if len(data) >= MAX_HEAD:
            return None
        if len(data) == seen:
            await asyncio.sleep(PEEK_POLL)
        seen = len(data)
    return None


class Interceptor:
    def __init__(self, config: InterceptConfig) -> None:
        self.rules = config.rules
        self.certs = config.certs  # name -> PEM (chain + key) for that name
        self.source = config.source  # onward connections leave from here
        self.source6 = config.listen6  # and those of IPv6 flows from here (dual stack)
        self.mark = config.splice_mark
        self.pass_mark = config.pass_mark
        self._contexts: dict[str, ssl.SSLContext] = {}
        self.upstream_tls = ssl.create_default_context()
        # The censor's box relays whatever the site presents: its client never sees that certificate.
        self.upstream_tls.check_hostname = False
        self.upstream_tls.verify_mode = ssl.CERT_NONE
        self.upstream_tls.set_alpn_protocols(["http/1.1"])

    def rule_for(self, name: str | None, address: str, port: int) -> InterceptRule | None:
        return next((r for r in self.rules if r.matches(name, address, port)), None)

    def context(self, name: str, rule: InterceptRule) -> ssl.SSLContext:
        """A server context presenting the censor CA's certificate for ``name`` (or, for a name no
        site of the lab has, the one issued for the rule's pattern)."""
        pem = self.certs.get(name) or self.certs[rule.sni]
        ctx = self._contexts.get(pem)
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(pem)
            ctx.set_alpn_protocols(["http/1.1"])
            self._contexts[pem] = ctx
        return ctx

    async def handle(self, sock: socket.socket) -> None:
        try:
            address, port = original_destination(sock)
            name = await peek_server_name(sock)
            rule = self.rule_for(name, address, port)
            if rule is None:
                await self.splice(sock, address, port)
            else:
                assert name is not None
                log.info("intercept %s (%s:%d) by rule line %d", name, address, port, rule.line)
                await self.intercept(sock, rule, name, address, port)
        except (TimeoutError, ConnectionError, OSError, ssl.SSLError) as exc:
            log.debug("connection ended: %r", exc)
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    async def _onward(self, address: str, port: int, mark: int, tls_name: str | None = None
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        six = ":" in address
        up = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_STREAM)
        try:
            up.setblocking(False)
            if mark:
                up.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
            up.bind((self.source6 if six and self.source6 else self.source, 0))
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await asyncio.get_running_loop().sock_connect(up, (address, port))
                return await asyncio.open_connection(
                    sock=up, ssl=self.upstream_tls if tls_name else None, server_hostname=tls_name)
        except BaseException:
            up.close()
            raise

    async def splice(self, sock: socket.socket, address: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            up_reader, up_writer = await self._onward(address, port, self.mark)
        except (TimeoutError, OSError):
            abort(writer)  # as the real server's refusal would look: a reset
            raise
        await relay(reader, writer, up_reader, up_writer)

    async def intercept(self, sock: socket.socket, rule: InterceptRule, name: str, address: str, port: int
                        ) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol, sock, ssl=self.context(name, rule), ssl_handshake_timeout=HEAD_TIMEOUT)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        try:
            if rule.page is not None:
                await answer_page(reader, writer, Path(rule.page).read_bytes())
                return
            # The middlebox's pass mark: the censor's own connection is not for its middlebox to judge.
            up_reader, up_writer = await self._onward(address, port, self.pass_mark, tls_name=name)
            await relay(reader, writer, up_reader, up_writer)
        finally:
            await close_connection(writer)


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
    """Both directions until both end (or one ends and the other is silent for LINGER); a reset
    from one side is passed on to the other as a reset."""
    down = asyncio.ensure_future(pipe(up_reader, writer))
    upward = asyncio.ensure_future(pipe(reader, up_writer))
    try:
        done, _ = await asyncio.wait({down, upward}, return_when=asyncio.FIRST_COMPLETED)
        if down in done and down.result():
            abort(writer)
        elif upward in done and upward.result():
            abort(up_writer)
        else:
            await asyncio.wait({down, upward}, timeout=LINGER)
            if down.done() and down.result():
                abort(writer)
    finally:
        for task in (down, upward):
            task.cancel()
        for w in (writer, up_writer):
            await close_connection(w)


async def serve(config: InterceptConfig) -> None:
    interceptor = Interceptor(config)
    # dual stack: the nat redirect of an IPv6 flow goes to the router's IPv6 access address
    socks = [listener(a, config.port) for a in (config.listen, config.listen6) if a]
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def accept(sock: socket.socket) -> None:
        while True:
            conn, _ = await loop.sock_accept(sock)
            conn.setblocking(False)
            task = asyncio.create_task(interceptor.handle(conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    acceptors = [asyncio.create_task(accept(sock)) for sock in socks]
    try:
        await serve_until_stopped([], config.ready_file)
    finally:
        for acceptor in acceptors:
            acceptor.cancel()
        for sock in socks:
            sock.close()


def main(argv: list[str] | None = None) -> int:
    return service_main(argv, name="intercept", parse=InterceptConfig.from_json, serve=serve,
                        description="An ISP's TLS interceptor (the DPI action intercept).")


if __name__ == "__main__":
    raise SystemExit(main())
