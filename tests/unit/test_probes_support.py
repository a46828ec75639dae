"""Test servers for the probe tests: real DNS, TCP, TLS and HTTP servers on 127.0.0.1.

Every server binds 127.0.0.1 on a random port and runs in a thread; it is ready as soon as its
constructor returns (the socket is bound and listening), so tests never sleep to wait for it.
``loopback_only`` makes any attempt to contact another address fail loudly.

This module holds no tests itself; test modules import what they need from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trustme

from probes.context import ProbeContext

LOOPBACK = "127.0.0.1"
LAB_NAMES = frozenset({"news.test", "ok.test", "nx.test", "fail.test", "refused.test", "empty.test",
                       "cname.test", "injected.test", "silent.test", "garbage.test", "global.test"})
#: Upper bound for any one probe run in a test.
RUN_TIMEOUT = 20.0


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a probe coroutine with a hard upper bound."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, RUN_TIMEOUT)

    return asyncio.run(bounded())


# --------------------------------------------------------------------------- safety net


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Refuse (and record) any connect/sendto to an address other than 127.0.0.1."""
    violations: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_sendto = socket.socket.sendto

    def check(address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host != LOOPBACK:
            violations.append(address)
            raise AssertionError(f"test tried to contact {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    def sendto(self: socket.socket, data: bytes, *args: Any) -> int:
        check(args[-1])
        return real_sendto(self, data, *args)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket.socket, "sendto", sendto)
    yield violations
    assert not violations, f"traffic to non-loopback addresses: {violations}"


# --------------------------------------------------------------------------- DNS

DnsBehaviour = Callable[[dns.message.Message], list[bytes]]


def answer(*ips: str, ttl: int = 60) -> DnsBehaviour:
    def respond(query: dns.message.Message) -> list[bytes]:
        response = dns.message.make_response(query)
        if ips:
            response.answer.append(dns.rrset.from_text(query.question[0].name, ttl, "IN", "A", *ips))
        return [response.to_wire()]

    return respond


def rcode(code: int) -> DnsBehaviour:
    def respond(query: dns.message.Message) -> list[bytes]:
        response = dns.message.make_response(query)
        response.set_rcode(code)
        return [response.to_wire()]

    return respond


def cname(alias: str, ip: str) -> DnsBehaviour:
    def respond(query: dns.message.Message) -> list[bytes]:
        response = dns.message.make_response(query)
        name = query.question[0].name
        response.answer.append(dns.rrset.from_text(name, 30, "IN", "CNAME", alias))
        response.answer.append(dns.rrset.from_text(alias, 30, "IN", "A", ip))
        return [response.to_wire()]

    return respond


def injected(forged_ip: str, real_ip: str) -> DnsBehaviour:
    """Two responses to one query, the forged one first: what an on-path injector produces."""
    forged, real = answer(forged_ip, ttl=300), answer(real_ip, ttl=60)

    def respond(query: dns.message.Message) -> list[bytes]:
        return forged(query) + real(query)

    return respond


def garbage_then(ip: str) -> DnsBehaviour:
    """A malformed datagram and one with the wrong id, then the real response."""
    real = answer(ip)

    def respond(query: dns.message.Message) -> list[bytes]:
        wrong_id = dns.message.make_response(query)
        wrong_id.id = (query.id + 1) % 65536
        return [b"\x00\x01garbage", wrong_id.to_wire(), *real(query)]

    return respond


def silent(query: dns.message.Message) -> list[bytes]:
    return []


DEFAULT_ZONE: dict[str, DnsBehaviour] = {
    "news.test": answer(LOOPBACK),
    "ok.test": answer(LOOPBACK),
    "nx.test": rcode(dns.rcode.NXDOMAIN),
    "fail.test": rcode(dns.rcode.SERVFAIL),
    "refused.test": rcode(dns.rcode.REFUSED),
    "empty.test": answer(),
    "cname.test": cname("ok.test.", LOOPBACK),
    # Only ever resolved, never contacted: the DNS tests do not connect anywhere.
    "injected.test": injected("10.10.34.34", LOOPBACK),
    "silent.test": silent,
    "garbage.test": garbage_then(LOOPBACK),
    # A globally routable answer: the probes must refuse to connect to it.
    "global.test": answer("93.184.216.34"),
}


class DnsServer:
    """A UDP DNS server on 127.0.0.1; ``zone`` maps a name to how to answer it."""

    def __init__(self, zone: dict[str, DnsBehaviour] | None = None) -> None:
        self.zone = dict(DEFAULT_ZONE if zone is None else zone)
        self.queries: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((LOOPBACK, 0))
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, client = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            name = query.question[0].name.to_text().rstrip(".")
            self.queries.append(name)
            behaviour = self.zone.get(name, rcode(dns.rcode.NXDOMAIN))
            for packet in behaviour(query):
                self._sock.sendto(packet, client)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer()
    yield server
    server.close()


def free_udp_port() -> int:
    """A UDP port nobody listens on (queries to it get ICMP port unreachable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def free_tcp_port() -> int:
    """A TCP port nobody listens on (connects to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- TCP / TLS / HTTP

Handler = Callable[[socket.socket, threading.Event], None]


class TcpServer:
    """A TCP server on 127.0.0.1 that runs ``handler(conn, stop)`` for each connection in a thread."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            self.handler(conn, self._stop)
        except Exception:
            pass  # the client's view of a broken connection is what the tests check
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self._sock.close()


def read_request(conn: socket.socket, log: list[bytes] | None = None) -> bytes:
    """Read up to the end of the request headers (bounded)."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    if log is not None:
        log.append(data)
    return data


def reset(conn: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def http_response(body: bytes, status: str = "200 OK", headers: list[tuple[str, str]] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: text/html; charset=utf-8",
             f"Content-Length: {len(body)}", "Server: fauxisp-test"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


PAGE = b"<html><head><title>  Lab &amp; News\n Today </title></head><body>hello</body></html>"


def serve(response: bytes, tls: ssl.SSLContext | None = None, log: list[bytes] | None = None) -> Handler:
    """Answer one request with ``response`` (over TLS when ``tls`` is given)."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        with wrap(conn, tls) as stream:
            read_request(stream, log)
            stream.sendall(response)

    return handler


def after_request(action: str, tls: ssl.SSLContext | None = None) -> Handler:
    """Read the request, then misbehave: "reset", "close", "partial" body, or "silent"."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        with wrap(conn, tls) as stream:
            read_request(stream)
            if action == "reset":
                reset(stream)
            elif action == "partial":
                stream.sendall(http_response(b"x" * 1000)[:-990])
            elif action == "silent":
                stop.wait(5)

    return handler


def wrap(conn: socket.socket, tls: ssl.SSLContext | None) -> socket.socket:
    """The connection itself, or a server-side TLS socket over it (which then owns the socket)."""
    return conn if tls is None else tls.wrap_socket(conn, server_side=True)


def during_handshake(action: str) -> Handler:
    """Read the ClientHello, then "reset", "close" (EOF), send an "alert", or stay "silent"."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        conn.recv(4096)
        if action == "reset":
            reset(conn)
        elif action == "alert":
            # A fatal handshake_failure alert record (TLS 1.2 framing).
            conn.sendall(b"\x15\x03\x03\x00\x02\x02\x28")
        elif action == "silent":
            stop.wait(5)
        conn.close()

    return handler


def big_body_handler(size: int) -> Handler:
    return serve(http_response(b"<title>big</title>" + b"a" * size))


@contextlib.contextmanager
def tcp_server(handler: Handler) -> Iterator[TcpServer]:
    server = TcpServer(handler)
    try:
        yield server
    finally:
        server.close()


# --------------------------------------------------------------------------- certificates


class Pki:
    """The lab CA (trusted by the probes) and certificates for the TLS tests."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.ca_file = directory / "lab-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.valid = self.ca.issue_cert("news.test", "ok.test", LOOPBACK)
        self.wrong_name = self.ca.issue_cert("other.test")
        self.unknown_ca = trustme.CA().issue_cert("news.test")
        now = datetime.datetime.now(datetime.UTC)
        day = datetime.timedelta(days=1)
        self.expired = self.ca.issue_cert("news.test", not_before=now - 10 * day, not_after=now - day)

    @staticmethod
    def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        context.set_alpn_protocols(["http/1.1"])
        return context

    @staticmethod
    def leaf_der(cert: trustme.LeafCert) -> bytes:
        return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def make_context(dns_port: int, ca_file: str = "/nonexistent-ca.pem", **overrides: Any) -> ProbeContext:
    """A context for tests: both resolvers on 127.0.0.1, short timeouts."""
    values: dict[str, Any] = {
        "vantage": "test",
        "resolver": LOOPBACK,
        "public_resolver": None,
        "ca_file": ca_file,
        "lab_names": LAB_NAMES,
        "probe_asn": 64500,
        "resolver_asn": 64500,
        "probe_network_name": "Test ISP",
        "dns_port": dns_port,
        "dns_timeout": 0.5,
        "dns_window": 0.2,
        "connect_timeout": 1.0,
        "tls_timeout": 1.0,
        "http_timeout": 1.0,
        "http_total_timeout": 5.0,
    }
    values.update(overrides)
    return ProbeContext(**values)
