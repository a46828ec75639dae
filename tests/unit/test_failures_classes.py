"""Every exception class the probes can meet -- the socket layer, ssl, asyncio, httpcore, h11,
dnspython, our own -- maps to one of OONI's canonical failure strings (df-007), or to
"unknown_failure: <text>"; never to anything else, never a crash. Plus the redirect failures."""

from __future__ import annotations

import asyncio
import builtins
import errno
import inspect
import ssl

import dns.exception
import dns.message
import dns.name
import dns.resolver
import h11
import httpcore
import pytest

from probes.errors import DnsResponseError, ProbeError, TargetRefused
from probes.failures import failure_string
from probes.redirects import BAD_LOCATION, TOO_MANY, location_of, next_target

CANONICAL = {
    "android_dns_cache_no_data", "connection_aborted", "connection_already_closed", "connection_refused",
    "connection_reset", "dns_bogon_error", "dns_no_answer", "dns_non_recoverable_failure", "dns_nxdomain_error",
    "dns_reply_with_wrong_query_id", "dns_refused_error", "dns_server_misbehaving", "dns_servfail_error",
    "dns_temporary_failure", "eof_error", "http_invalid_redirect_location_host", "http_request_failed",
    "host_unreachable", "generic_timeout_error", "http_unexpected_redirect_url", "http_unexpected_status_code",
    "interrupted", "json_parse_error", "network_down", "network_reset", "network_unreachable",
    "quic_incompatible_version", "ssl_failed_handshake", "ssl_invalid_hostname", "ssl_unknown_authority",
    "ssl_invalid_certificate",
}


def is_ooni(failure: str) -> bool:
    return failure in CANONICAL or failure.startswith("unknown_failure: ")


def exception_classes(module: object) -> list[type[BaseException]]:
    return sorted({c for _, c in inspect.getmembers(module, inspect.isclass) if issubclass(c, Exception)},
                  key=lambda c: c.__qualname__)


def instantiate(cls: type[BaseException]) -> BaseException | None:
    for args in (("boom",), (), (1, "boom")):
        try:
            return cls(*args)
        except Exception:  # some classes want other arguments: try the next shape
            continue
    return None


@pytest.mark.parametrize("cls", exception_classes(httpcore) + exception_classes(h11) + exception_classes(ssl)
                         + exception_classes(dns.exception) + exception_classes(dns.resolver)
                         + exception_classes(builtins) + [asyncio.IncompleteReadError, asyncio.CancelledError,
                                                          asyncio.InvalidStateError, ProbeError, TargetRefused],
                         ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_class_gets_an_ooni_failure(cls: type[BaseException]) -> None:
    exc = instantiate(cls) if cls is not asyncio.IncompleteReadError else cls(b"ab", 10)
    if exc is None:
        pytest.skip(f"{cls.__qualname__} cannot be built without special arguments")
    assert is_ooni(failure_string(exc))


@pytest.mark.parametrize(("code", "expected"), [
    (errno.ECONNREFUSED, "connection_refused"), (errno.ECONNRESET, "connection_reset"),
    (errno.EPIPE, "connection_reset"), (errno.EHOSTUNREACH, "host_unreachable"),
    (errno.ENETUNREACH, "network_unreachable"), (errno.ECONNABORTED, "connection_aborted"),
    (errno.ENETDOWN, "network_down"), (errno.ENETRESET, "network_reset"), (errno.ETIMEDOUT, "generic_timeout_error"),
])
def test_every_socket_errno(code: int, expected: str) -> None:
    assert failure_string(OSError(code, "x")) == expected


@pytest.mark.parametrize(("exc", "expected"), [
    (DnsResponseError(3), "dns_nxdomain_error"), (DnsResponseError(2), "dns_servfail_error"),
    (DnsResponseError(5), "dns_refused_error"), (DnsResponseError(0), "dns_no_answer"),
    (DnsResponseError(4), "dns_server_misbehaving"),
    (dns.resolver.NXDOMAIN(qnames=[dns.name.from_text("x.test")]), "dns_nxdomain_error"),
    (dns.exception.Timeout(), "generic_timeout_error"),
    (dns.resolver.NoNameservers(), "dns_server_misbehaving"),
    (dns.message.ShortHeader(), "dns_server_misbehaving"),
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), "eof_error"),
    (ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed"), "eof_error"),
    (ssl.SSLError(1, "[SSL: TLSV1_ALERT_PROTOCOL_VERSION] alert"), "ssl_failed_handshake"),
    (httpcore.ReadTimeout("t"), "generic_timeout_error"), (httpcore.ConnectTimeout("t"), "generic_timeout_error"),
    (httpcore.RemoteProtocolError("Server disconnected without sending a response."), "eof_error"),
    (asyncio.IncompleteReadError(b"", 5), "eof_error"), (EOFError(), "eof_error"),
    (asyncio.CancelledError(), "interrupted"), (TimeoutError(), "generic_timeout_error"),
    (ValueError("odd"), "unknown_failure: odd"), (RuntimeError(), "unknown_failure: RuntimeError"),
])
def test_specific_failures(exc: BaseException, expected: str) -> None:
    assert failure_string(exc) == expected


def test_a_broken_str_still_maps() -> None:
    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    assert failure_string(Nasty()) == "unknown_failure: Nasty"


@pytest.mark.parametrize(("location", "expected"), [
    ("http://", BAD_LOCATION), ("https://", BAD_LOCATION), ("http://:80/", BAD_LOCATION),
    ("ftp://a.test/", "unknown_failure: 'ftp://a.test/': scheme must be http or https"),
])
def test_broken_locations(location: str, expected: str) -> None:
    assert next_target(location, "http://site.test/a") == (None, expected)


def test_relative_and_absolute_locations() -> None:
    nxt, failure = next_target("/hop/2", "https://site.test/x")
    assert failure is None and nxt is not None and nxt.url == "https://site.test/hop/2"
    nxt, _ = next_target("http://Other.Test:8080/p?q=1", "https://site.test/")
    assert nxt is not None and (nxt.host, nxt.port) == ("other.test", 8080)


def test_location_only_of_redirects() -> None:
    entry = {"failure": None, "response": {"code": 302, "headers_list": [["location", "/x"]]}}
    assert location_of(entry) == "/x"
    assert location_of({**entry, "response": {"code": 200, "headers_list": [["Location", "/x"]]}}) is None
    assert location_of({**entry, "response": {"code": 301, "headers_list": []}}) is None
    assert TOO_MANY == "unknown_failure: stopped after too many redirects"
