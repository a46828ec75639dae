"""Map exceptions to OONI's canonical failure strings (ooni/spec df-007-errors).

``failure_string`` never raises: anything it does not recognise becomes
``"unknown_failure: <text>"``. It imports neither dnspython nor httpcore up front (they are
slow to import and the worker starts before it knows which probes it will run); an exception
from those libraries can only exist once the library has been imported anyway.
"""

from __future__ import annotations

import asyncio
import errno
import ssl

from probes.errors import DnsResponseError

GENERIC_TIMEOUT = "generic_timeout_error"
EOF = "eof_error"
DNS_BOGON = "dns_bogon_error"  # OONI probe-engine: a bogon (here: only loopback) in the DNS response

# DNS response codes (RFC 1035 / 6895) the mapping distinguishes.
RCODE_NOERROR = 0
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_REFUSED = 5

_RCODE_FAILURES = {
    RCODE_NOERROR: "dns_no_answer",  # NOERROR but no A record in the answer
    RCODE_NXDOMAIN: "dns_nxdomain_error",
    RCODE_SERVFAIL: "dns_servfail_error",
    RCODE_REFUSED: "dns_refused_error",
}

_ERRNO_FAILURES = {
    errno.ECONNREFUSED: "connection_refused",
    errno.ECONNRESET: "connection_reset",
    # Linux answers a write after the peer's RST with EPIPE: the connection was reset.
    errno.EPIPE: "connection_reset",
    errno.EHOSTUNREACH: "host_unreachable",
    errno.ENETUNREACH: "network_unreachable",
    errno.ECONNABORTED: "connection_aborted",
    errno.ENETDOWN: "network_down",
    errno.ENETRESET: "network_reset",
    errno.ETIMEDOUT: GENERIC_TIMEOUT,
}

# OpenSSL X509_V_ERR_* codes carried by ssl.SSLCertVerificationError.verify_code.
_X509_HOSTNAME_MISMATCH = {62, 63, 64}  # hostname, email, IP address mismatch
_X509_UNKNOWN_AUTHORITY = {
    2,  # unable to get issuer certificate
    18,  # self-signed leaf
    19,  # self-signed certificate in chain
    20,  # unable to get local issuer certificate
    21,  # unable to verify the first certificate
}

# Text of EOF conditions reported by libraries that have no dedicated exception class.
_EOF_MARKERS = (
    "eof occurred in violation of protocol",
    "unexpected eof",
    "server disconnected",
    "peer closed connection",
    "connection closed",
)


def failure_string(exc: BaseException) -> str:
    """Return OONI's failure string for ``exc``. Never raises."""
    try:
        return _classify(exc, depth=0)
    except Exception:  # a bug here (or an exception whose str() fails) must not crash a probe
        return f"unknown_failure: {type(exc).__name__}"


def dns_rcode_failure(rcode: int) -> str:
    """Failure string for a DNS response with ``rcode`` that gave no A record."""
    return _RCODE_FAILURES.get(rcode, "dns_server_misbehaving")


def _classify(exc: BaseException, depth: int) -> str:
    if isinstance(exc, DnsResponseError):
        return dns_rcode_failure(exc.rcode)
    if isinstance(exc, asyncio.CancelledError):
        return "interrupted"
    # TimeoutError (= asyncio.TimeoutError = socket.timeout) is an OSError: test it first.
    if isinstance(exc, TimeoutError):
        return GENERIC_TIMEOUT
    # ssl.SSLError is an OSError too, and its errno is an SSL code, not a socket errno.
    if isinstance(exc, ssl.SSLError):
        return _ssl_failure(exc)
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return EOF
    if isinstance(exc, OSError) and exc.errno in _ERRNO_FAILURES:
        return _ERRNO_FAILURES[exc.errno]

    module = type(exc).__module__
    if module.startswith(("httpcore", "h11")):
        # httpcore wraps the underlying error (ReadError from ConnectionResetError, ...) and keeps
        # it as __cause__: the cause says what really happened.
        if exc.__cause__ is not None and depth < 5:
            return _classify(exc.__cause__, depth + 1)
        return _http_failure(exc)
    if module.startswith("dns"):
        return _dnspython_failure(exc)
    if _mentions_eof(exc):
        return EOF
    return _unknown(exc)


def _ssl_failure(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code in _X509_HOSTNAME_MISMATCH:
            return "ssl_invalid_hostname"
        if code in _X509_UNKNOWN_AUTHORITY:
            return "ssl_unknown_authority"
        return "ssl_invalid_certificate"  # expired, not yet valid, bad signature, ...
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError) or _mentions_eof(exc):
        return EOF
    return "ssl_failed_handshake"  # alerts and other protocol errors


def _http_failure(exc: BaseException) -> str:
    import httpcore

    if isinstance(exc, httpcore.TimeoutException):
        return GENERIC_TIMEOUT
    if _mentions_eof(exc):
        return EOF
    return _unknown(exc)


def _dnspython_failure(exc: BaseException) -> str:
    import dns.exception
    import dns.resolver

    if isinstance(exc, dns.exception.Timeout):
        return GENERIC_TIMEOUT
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return "dns_nxdomain_error"
    if isinstance(exc, dns.resolver.NoAnswer):
        return "dns_no_answer"
    if isinstance(exc, dns.exception.DNSException):
        # Malformed responses, no nameservers left, and the like.
        return "dns_server_misbehaving"
    return _unknown(exc)


def _mentions_eof(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _EOF_MARKERS)


def _unknown(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"unknown_failure: {text}"
