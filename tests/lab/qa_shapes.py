"""The measurement keys OONI's analysis reads (queries, tcp_connect, tls_handshakes, requests,
control), in the shape OONI's QA suite gives each case (probe-cli internal/webconnectivityqa: the
condition of the case and the flags it expects; the test helper's behaviour from oohelperd), so a
drift in what the lab writes fails a test instead of surprising OONI's analysis.

``shape_of`` reduces a measurement to:

- ``dns``: the probe's depth-0 system lookup: its failure, else "same" (shares an address with the
  test helper) or "other" ("answered" without a test helper);
- ``tcp`` / ``tls``: per port, the depth-0 connects (and TLS handshakes on 443) to the system
  resolver's addresses: "ok" or the first failure (``tls`` is "-" without any handshake);
- ``tcp1`` / ``tls1``: the same at redirect depth 1 (redirect cases only);
- ``requests``: how many, and the newest one's failure;
- ``control``: the test helper's ``dns.failure``, whether it had addresses, its ``tcp_connect``
  (per port: did it connect) and ``tls_handshake`` failure for the probe's addresses, and its
  ``http_request.failure``; "unreachable" when the probe could not reach it.

``EXPECTED`` holds OONI's shape for every case (only the keys given are compared).
"""

from __future__ import annotations

from typing import Any

from harness.ooni_rules import depth_of
from probes.redirects import TOO_MANY

OK = "ok"


def _port(entry: dict[str, Any]) -> int:
    if "port" in entry:
        return int(entry["port"])
    return int(str(entry["address"]).rsplit(":", 1)[1])


def _ip(entry: dict[str, Any]) -> str:
    return str(entry.get("ip") or str(entry["address"]).rsplit(":", 1)[0].strip("[]"))


def _per_port(entries: list[dict[str, Any]], failure_of: Any) -> dict[int, str]:
    out: dict[int, str] = {}
    for e in entries:
        failure = failure_of(e)
        port = _port(e)
        if port not in out or (out[port] == OK and failure is not None):
            out[port] = OK if failure is None else failure
    return out


def _flows(tk: dict[str, Any], key: str, depth: int, addrs: set[str]) -> list[dict[str, Any]]:
    return [e for e in tk.get(key) or [] if depth_of(e) == depth and (depth > 0 or _ip(e) in addrs)]


def shape_of(tk: dict[str, Any]) -> dict[str, Any]:
    """The reduced shape of one measurement's test keys (see the module docstring)."""
    system = list((tk.get("x_resolved") or {}).get("system") or [])
    addrs = set(system)
    control = tk.get("control") or {}
    th_addrs = set((control.get("dns") or {}).get("addrs") or [])
    unreachable = tk.get("control_failure") is not None
    answered = "answered" if unreachable else ("same" if addrs & th_addrs else "other")
    dns = tk.get("dns_experiment_failure") or ("dns_no_answer" if not system else answered)
    out: dict[str, Any] = {"dns": dns}
    for depth, suffix in ((0, ""), (1, "1")):
        tcp = _flows(tk, "tcp_connect", depth, addrs)
        tls = _flows(tk, "tls_handshakes", depth, addrs)
        out["tcp" + suffix] = _per_port(tcp, lambda e: (e.get("status") or {}).get("failure"))
        tls_ports = _per_port(tls, lambda e: e.get("failure"))
        out["tls" + suffix] = tls_ports.get(443, tls_ports.get(next(iter(tls_ports), 0), "-"))
    requests = tk.get("requests") or []
    out["requests"] = (len(requests), requests[0].get("failure") if requests else None)
    if tk.get("control_failure") is not None:
        out["control"] = "unreachable"
        return out
    th_tcp = control.get("tcp_connect") or {}
    th_tls = control.get("tls_handshake") or {}
    tcp_seen: dict[int, str] = {}
    for ep, v in th_tcp.items():
        ip, port = ep.rsplit(":", 1)
        if ip.strip("[]") in addrs:
            status = OK if v.get("status") else "fail"
            if tcp_seen.get(int(port)) in (None, OK):
                tcp_seen[int(port)] = status
    tls_seen = [v.get("failure") or OK for ep, v in th_tls.items() if ep.rsplit(":", 1)[0].strip("[]") in addrs]
    out["control"] = {
        "dns": (control.get("dns") or {}).get("failure"),
        "addrs": bool(th_addrs),
        "tcp": tcp_seen,
        "tls": tls_seen[0] if tls_seen else "-",
        "http": (control.get("http_request") or {}).get("failure"),
    }
    return out


def compare(got: dict[str, Any], want: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys (``control.x`` for the helper's) whose value differs: {key: (got, want)}."""
    diff: dict[str, tuple[Any, Any]] = {}
    for key, value in want.items():
        if key == "control" and isinstance(value, dict) and isinstance(got.get("control"), dict):
            for k, v in value.items():
                if got["control"].get(k) != v:
                    diff[f"control.{k}"] = (got["control"].get(k), v)
        elif got.get(key) != value:
            diff[key] = (got.get(key), value)
    return diff


def _ctl(dns: str | None = None, addrs: bool = True, tcp: dict[int, str] | None = None, tls: str = "-",
         http: str | None = None) -> dict[str, Any]:
    return {"dns": dns, "addrs": addrs, "tcp": tcp or {}, "tls": tls, "http": http}


HTTP_OK = {"dns": "same", "tcp": {80: OK, 443: OK}, "tls": OK, "requests": (1, None),
           "control": _ctl(tcp={80: OK, 443: OK}, tls=OK)}
HTTPS_OK = {"dns": "same", "tcp": {443: OK}, "tls": OK, "requests": (1, None),
            "control": _ctl(tcp={443: OK}, tls=OK)}
# bit.ly (https) answers a redirect; depth 1 is www.example.com over http or https.
REDIRECT = {"dns": "same", "tcp": {443: OK}, "tls": OK, "control": _ctl(tcp={443: OK}, tls=OK)}


def _bad_tls(failure: str) -> dict[str, Any]:
    # The test helper's handshake fails the same way (x_null_null_flags 4) and so does its fetch.
    return {"dns": "same", "tcp": {443: OK}, "tls": failure, "requests": (0, None),
            "control": _ctl(tcp={443: OK}, tls=failure, http="unknown_error")}


#: OONI's documented shape of each case (webconnectivityqa; docs/ooni.md, qa/README.md).
EXPECTED: dict[str, dict[str, Any]] = {
    "badSSLWithUnknownAuthorityWithConsistentDNS": _bad_tls("ssl_unknown_authority"),
    "badSSLWithExpiredCertificate": _bad_tls("ssl_invalid_certificate"),
    "badSSLWithWrongServerName": _bad_tls("ssl_invalid_hostname"),
    # DNS points at the badssl server: the helper's handshake there (SNI www.example.com) fails
    # too (x_null_null_flags 4), its own fetch of the real site works.
    "badSSLWithUnknownAuthorityWithInconsistentDNS": {
        "dns": "other", "tcp": {443: OK}, "tls": "ssl_unknown_authority", "requests": (1, None),
        "control": _ctl(tcp={443: OK}, tls="ssl_unknown_authority")},
    "cloudflareCAPTCHAWithHTTP": HTTP_OK,
    "cloudflareCAPTCHAWithHTTPS": HTTPS_OK,
    "controlFailureWithSuccessfulHTTPWebsite": {**HTTP_OK, "dns": "answered", "control": "unreachable"},
    "controlFailureWithSuccessfulHTTPSWebsite": {**HTTPS_OK, "dns": "answered", "control": "unreachable"},
    # A bogon: the helper never connects to it. Where the system resolver's addresses cannot fetch,
    # a flow to an address of the other resolver does (priority.go): one request.
    "dnsBlockingBOGON": {"dns": "other", "tcp": {443: "generic_timeout_error"}, "tls": "-", "requests": (1, None),
                         "control": _ctl()},
    "dnsBlockingNXDOMAIN": {"dns": "dns_nxdomain_error", "tcp": {}, "tls": "-", "requests": (1, None),
                            "control": _ctl()},
    # Loopback answers are never connected to, by the probe or the helper.
    "dnsHijackingToLocalhostWithHTTP": {"dns": "other", "tcp": {}, "tls": "-", "requests": (1, None),
                                        "control": _ctl()},
    "dnsHijackingToLocalhostWithHTTPS": {"dns": "other", "tcp": {}, "tls": "-", "requests": (1, None),
                                         "control": _ctl()},
    # The ISP's transparent proxy relays by Host and SNI: every endpoint works, for both.
    "dnsHijackingToProxyWithHTTPURL": {**HTTP_OK, "dns": "other"},
    "dnsHijackingToProxyWithHTTPSURL": {**HTTPS_OK, "dns": "other"},
    # The public blockpage server listens on 80 only; the helper cannot resolve the name.
    "ghostDNSBlockingWithHTTP": {
        "dns": "other", "tcp": {80: OK, 443: "connection_refused"}, "tls": "-", "requests": (1, None),
        "control": _ctl(dns="dns_name_error", addrs=False, tcp={80: OK, 443: "fail"}, http="dns_lookup_error")},
    "ghostDNSBlockingWithHTTPS": {
        "dns": "other", "tcp": {443: "connection_refused"}, "tls": "-", "requests": (0, None),
        "control": _ctl(dns="dns_name_error", addrs=False, tcp={443: "fail"}, http="dns_lookup_error")},
    "httpBlockingConnectionReset": {**HTTP_OK, "requests": (1, "connection_reset")},
    "httpDiffWithConsistentDNS": HTTP_OK,
    "httpDiffWithInconsistentDNS": {**HTTP_OK, "dns": "other"},
    "idnaWithoutCensorshipLowercase": {**HTTP_OK, "requests": (3, None)},
    "idnaWithoutCensorshipWithFirstLetterUppercase": {**HTTP_OK, "requests": (3, None)},
    "largeFileWithHTTP": HTTP_OK,
    "largeFileWithHTTPS": HTTPS_OK,
    # Every resolver answers 127.0.0.1; the helper's own resolver refuses that bogon (unknown_error).
    "localhostWithHTTP": {"dns": "same", "tcp": {}, "tls": "-", "requests": (0, None),
                          "control": _ctl(http="unknown_error")},
    "localhostWithHTTPS": {"dns": "same", "tcp": {}, "tls": "-", "requests": (0, None),
                           "control": _ctl(http="unknown_error")},
    # The request that got the broken redirect carries the failure.
    "redirectWithBrokenLocationForHTTP": {**HTTP_OK, "requests": (1, "http_invalid_redirect_location_host")},
    "redirectWithBrokenLocationForHTTPS": {**HTTPS_OK, "requests": (1, "http_invalid_redirect_location_host")},
    "redirectWithConsistentDNSAndThenConnectionRefusedForHTTP": {
        **REDIRECT, "requests": (1, None), "tcp1": {80: "connection_refused", 443: "connection_refused"}, "tls1": "-"},
    "redirectWithConsistentDNSAndThenConnectionRefusedForHTTPS": {
        **REDIRECT, "requests": (1, None), "tcp1": {443: "connection_refused"}, "tls1": "-"},
    "redirectWithConsistentDNSAndThenConnectionResetForHTTP": {
        **REDIRECT, "requests": (2, "connection_reset"), "tcp1": {80: OK, 443: OK}, "tls1": "connection_reset"},
    "redirectWithConsistentDNSAndThenConnectionResetForHTTPS": {
        **REDIRECT, "requests": (1, None), "tcp1": {443: OK}, "tls1": "connection_reset"},
    "redirectWithConsistentDNSAndThenNXDOMAIN": {**REDIRECT, "requests": (1, None), "tcp1": {}, "tls1": "-"},
    "redirectWithConsistentDNSAndThenEOFForHTTP": {
        **REDIRECT, "requests": (2, "eof_error"), "tcp1": {80: OK, 443: OK}, "tls1": "eof_error"},
    "redirectWithConsistentDNSAndThenEOFForHTTPS": {
        **REDIRECT, "requests": (1, None), "tcp1": {443: OK}, "tls1": "eof_error"},
    "redirectWithConsistentDNSAndThenTimeoutForHTTP": {
        **REDIRECT, "requests": (2, "generic_timeout_error"), "tcp1": {80: OK, 443: OK},
        "tls1": "generic_timeout_error"},
    "redirectWithConsistentDNSAndThenTimeoutForHTTPS": {
        **REDIRECT, "requests": (1, None), "tcp1": {443: OK}, "tls1": "generic_timeout_error"},
    # Go's client (the helper's) stops after 10 redirects too: unknown_error.
    "redirectWithMoreThanTenRedirectsAndHTTP": {**HTTP_OK, "requests": (11, TOO_MANY),
                                                "control": _ctl(tcp={80: OK, 443: OK}, tls=OK, http="unknown_error")},
    "redirectWithMoreThanTenRedirectsAndHTTPS": {**HTTPS_OK, "requests": (11, TOO_MANY),
                                                 "control": _ctl(tcp={443: OK}, tls=OK, http="unknown_error")},
    "successWithHTTP": HTTP_OK,
    "successWithHTTPS": HTTPS_OK,
    "tcpBlockingConnectTimeout": {"dns": "same", "tcp": {443: "generic_timeout_error"}, "tls": "-",
                                  "requests": (0, None), "control": _ctl(tcp={443: OK}, tls=OK)},
    # DNS points at the public blockpage server (80 only), whose 80 the ISP refuses: the helper
    # connects to its 80 and is refused on 443 (x_null_null_flags 2); the page comes through the
    # other resolver's address (x_blocking_flags 32).
    "tcpBlockingConnectionRefusedWithInconsistentDNS": {
        "dns": "other", "tcp": {80: "connection_refused", 443: "connection_refused"}, "tls": "-",
        "requests": (1, None), "control": _ctl(tcp={80: OK, 443: "fail"})},
    "throttlingWithHTTPS": {**HTTPS_OK, "requests": (1, "generic_timeout_error")},
    "tlsBlockingConnectionResetWithConsistentDNS": {
        "dns": "same", "tcp": {443: OK}, "tls": "connection_reset", "requests": (0, None),
        "control": _ctl(tcp={443: OK}, tls=OK)},
    "tlsBlockingConnectionResetWithInconsistentDNS": {
        "dns": "other", "tcp": {443: OK}, "tls": "connection_reset", "requests": (0, None),
        "control": _ctl(tcp={443: OK}, tls=OK)},
    "websiteDownNXDOMAIN": {"dns": "dns_nxdomain_error", "tcp": {}, "tls": "-", "requests": (0, None),
                            "control": _ctl(dns="dns_name_error", addrs=False, http="dns_lookup_error")},
    "websiteDownNoAddrs": {"dns": "dns_no_answer", "tcp": {}, "tls": "-", "requests": (0, None),
                           "control": _ctl(addrs=False, http="dns_lookup_error")},
    # An explicit port: no 443 flows, and the helper measures that port only.
    "websiteDownTCPConnect": {"dns": "same", "tcp": {444: "connection_refused"}, "tls": "-", "requests": (0, None),
                              "control": _ctl(tcp={444: "fail"}, http="connection_refused_error")},
}

#: Keys where the lab's measurement still differs from OONI's shape: {case: {key: (lab, OONI, why)}},
#: checked as they are, so a change either way shows.
KNOWN_DIFFERENCES: dict[str, dict[str, tuple[Any, Any, str]]] = {
    # OONI's emulated Yandex redirects twice (to https, then once more) before its page; the lab's
    # site answers at once. The outcome keys (pinned in the case's expect_ooni) are the same.
    "idnaWithoutCensorshipLowercase": {"requests": ((1, None), (3, None), "OONI's Yandex server redirects twice")},
    "idnaWithoutCensorshipWithFirstLetterUppercase": {
        "requests": ((1, None), (3, None), "OONI's Yandex server redirects twice")},
}
