"""The verdict vocabulary (docs/verdicts.md), shared by the oracle and the analysis."""

from __future__ import annotations

from enum import StrEnum


class Verdict(StrEnum):
    OK = "ok"
    DNS_NXDOMAIN = "dns.nxdomain"
    DNS_SERVFAIL = "dns.servfail"
    DNS_REFUSED = "dns.refused"
    DNS_TIMEOUT = "dns.timeout"
    DNS_BOGON = "dns.bogon"
    DNS_MISMATCH = "dns.mismatch"
    DNS_INJECTED = "dns.injected"
    TCP_TIMEOUT = "tcp.timeout"
    TCP_RESET = "tcp.reset"
    TCP_UNREACHABLE = "tcp.unreachable"
    TLS_RESET = "tls.reset"
    TLS_TIMEOUT = "tls.timeout"
    TLS_EOF = "tls.eof"
    TLS_ALERT = "tls.alert"
    TLS_CERT_INVALID = "tls.cert_invalid"
    # QUIC (the quic probe): the handshake got no answer (a dropped Initial), or an ICMP error
    # answered it (a firewall rejecting UDP): OONI's generic_timeout_error / connection_refused.
    QUIC_TIMEOUT = "quic.timeout"
    QUIC_RESET = "quic.reset"
    # The web probe's QUIC step (probe setting web_quic): the page loads over TCP, HTTP/3 fails.
    QUIC_BLOCKED = "quic.blocked"
    HTTP_RESET = "http.reset"
    HTTP_TIMEOUT = "http.timeout"
    HTTP_EOF = "http.eof"
    HTTP_BLOCKPAGE = "http.blockpage"
    HTTP_DIFF = "http.diff"
    THROTTLED = "throttled"
    SITE_DOWN = "site_down"
    CONTROL_FAILED = "control_failed"
    # The oracle expects a verdict for this (vantage, target) but the run has no measurement of it
    # (the probe failed, timed out, or the worker never answered): a mismatch, never a pass.
    # Rows carry which of those it was (harness.score.VerdictRow.no_measurement).
    NO_MEASUREMENT = "no_measurement"

    def __str__(self) -> str:
        return self.value

    @property
    def technique(self) -> str:
        """The family a verdict belongs to: dns, tcp, tls, http, throttled, ok, ..."""
        return self.value.split(".", 1)[0]

    @property
    def is_censorship(self) -> bool:
        return self not in (Verdict.OK, Verdict.SITE_DOWN, Verdict.CONTROL_FAILED, Verdict.NO_MEASUREMENT)


# OONI web_connectivity (blocking, accessible) for each verdict.
OONI_BLOCKING: dict[Verdict, tuple[str | bool | None, bool | None]] = {
    Verdict.OK: (False, True),
    Verdict.THROTTLED: (False, True),
    Verdict.SITE_DOWN: (False, False),
    Verdict.CONTROL_FAILED: (None, None),
    Verdict.NO_MEASUREMENT: (None, None),
    Verdict.HTTP_BLOCKPAGE: ("http-diff", False),
    Verdict.HTTP_DIFF: ("http-diff", False),
    # OONI's web_connectivity does not try HTTP/3: it finds the page accessible.
    Verdict.QUIC_BLOCKED: (False, True),
}
for _v in Verdict:
    if _v not in OONI_BLOCKING:
        OONI_BLOCKING[_v] = ({"dns": "dns", "tcp": "tcp_ip"}.get(_v.technique, "http-failure"), False)
