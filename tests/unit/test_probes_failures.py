"""Every exception the probes can meet maps to OONI's failure string (df-007)."""

from __future__ import annotations

import asyncio
import errno
import ssl

import dns.exception
import dns.message
import dns.resolver
import h11
import httpcore
import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes.errors import DnsResponseError
from probes.failures import dns_rcode_failure, failure_string


def cert_error(verify_code: int, message: str = "certificate verify failed") -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, message)
    exc.verify_code = verify_code
    exc.verify_message = message
    return exc


def wrapped(outer: type[Exception], cause: BaseException) -> Exception:
    """An httpcore error raised ``from`` a lower-level one, as httpcore's backends do."""
    try:
        raise outer(str(cause)) from cause
    except outer as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        # timeouts
        (TimeoutError(), "generic_timeout_error"),
        (OSError(errno.ETIMEDOUT, "timed out"), "generic_timeout_error"),
        (httpcore.ReadTimeout("read timed out"), "generic_timeout_error"),
        (httpcore.ConnectTimeout(""), "generic_timeout_error"),
        (dns.exception.Timeout(), "generic_timeout_error"),
        # socket errnos
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connection_refused"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "connection_reset"),
        (BrokenPipeError(errno.EPIPE, "broken pipe"), "connection_reset"),
        (OSError(errno.EHOSTUNREACH, "no route to host"), "host_unreachable"),
        (OSError(errno.ENETUNREACH, "network is unreachable"), "network_unreachable"),
        (ConnectionAbortedError(errno.ECONNABORTED, "aborted"), "connection_aborted"),
        (OSError(errno.ENETDOWN, "down"), "network_down"),
        # wrapped by httpcore: the cause decides
        (wrapped(httpcore.ReadError, ConnectionResetError(errno.ECONNRESET, "reset")), "connection_reset"),
        (wrapped(httpcore.WriteError, BrokenPipeError(errno.EPIPE, "pipe")), "connection_reset"),
        (wrapped(httpcore.ReadTimeout, TimeoutError()), "generic_timeout_error"),
        (wrapped(httpcore.ReadError, ssl.SSLError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC]")),
         "ssl_failed_handshake"),
        # EOF
        (asyncio.IncompleteReadError(b"ab", 10), "eof_error"),
        (EOFError(), "eof_error"),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol (_ssl.c:2427)"), "eof_error"),
        (ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed (EOF)"), "eof_error"),
        (ssl.SSLError(1, "[SSL: UNEXPECTED_EOF_WHILE_READING] unexpected eof while reading"), "eof_error"),
        (httpcore.RemoteProtocolError("Server disconnected without sending a response."), "eof_error"),
        (wrapped(httpcore.RemoteProtocolError,
                 h11.RemoteProtocolError("peer closed connection without sending complete message body")),
         "eof_error"),
        # certificates
        (cert_error(62, "Hostname mismatch, certificate is not valid for 'news.test'."),
         "ssl_invalid_hostname"),
        (cert_error(64, "IP address mismatch"), "ssl_invalid_hostname"),
        (cert_error(20, "unable to get local issuer certificate"), "ssl_unknown_authority"),
        (cert_error(18, "self-signed certificate"), "ssl_unknown_authority"),
        (cert_error(19, "self-signed certificate in certificate chain"), "ssl_unknown_authority"),
        (cert_error(10, "certificate has expired"), "ssl_invalid_certificate"),
        (cert_error(9, "certificate is not yet valid"), "ssl_invalid_certificate"),
        (cert_error(7, "certificate signature failure"), "ssl_invalid_certificate"),
        # other TLS errors
        (ssl.SSLError(1, "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure"),
         "ssl_failed_handshake"),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "ssl_failed_handshake"),
        # DNS
        (DnsResponseError(3, "nx.test"), "dns_nxdomain_error"),
        (DnsResponseError(2), "dns_servfail_error"),
        (DnsResponseError(5), "dns_refused_error"),
        (DnsResponseError(0), "dns_no_answer"),
        (DnsResponseError(1), "dns_server_misbehaving"),
        (DnsResponseError(4), "dns_server_misbehaving"),
        (dns.resolver.NXDOMAIN(), "dns_nxdomain_error"),
        (dns.resolver.NoAnswer(), "dns_no_answer"),
        (dns.exception.FormError("bad"), "dns_server_misbehaving"),
        (dns.message.ShortHeader(), "dns_server_misbehaving"),
        # other
        (asyncio.CancelledError(), "interrupted"),
        (ValueError("boom"), "unknown_failure: boom"),
        (RuntimeError(), "unknown_failure: RuntimeError"),
        (OSError(errno.ENOENT, "No such file or directory"),
         "unknown_failure: [Errno 2] No such file or directory"),
        (httpcore.RemoteProtocolError("illegal status line"), "unknown_failure: illegal status line"),
    ],
)
def test_failure_string(exc: BaseException, expected: str) -> None:
    assert failure_string(exc) == expected


def test_rcode_table() -> None:
    assert dns_rcode_failure(0) == "dns_no_answer"
    assert dns_rcode_failure(3) == "dns_nxdomain_error"
    assert dns_rcode_failure(2) == "dns_servfail_error"
    assert dns_rcode_failure(5) == "dns_refused_error"
    assert dns_rcode_failure(9) == "dns_server_misbehaving"


def test_failure_string_never_raises() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text for you")

    assert failure_string(Unprintable()) == "unknown_failure: Unprintable"


def _client_after_hello() -> tuple[ssl.SSLObject, ssl.MemoryBIO]:
    incoming = ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(incoming, ssl.MemoryBIO(), server_hostname="x.test")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()  # writes the ClientHello, then waits for the server
    return client, incoming


def test_real_ssl_errors() -> None:
    """Errors raised by a real TLS client, not built by hand."""
    client, incoming = _client_after_hello()
    incoming.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # a server that does not speak TLS
    with pytest.raises(ssl.SSLError) as info:
        client.do_handshake()
    assert failure_string(info.value) == "ssl_failed_handshake"

    client, incoming = _client_after_hello()
    incoming.write_eof()  # the server closed the connection
    with pytest.raises(ssl.SSLError) as info:
        client.do_handshake()
    assert failure_string(info.value) == "eof_error"


@given(st.text(), st.sampled_from([Exception, ValueError, OSError, RuntimeError, ssl.SSLError]))
def test_any_exception_gets_a_failure_string(text: str, kind: type[Exception]) -> None:
    result = failure_string(kind(text))
    assert isinstance(result, str) and result
