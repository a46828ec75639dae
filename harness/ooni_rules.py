"""OONI's web_connectivity decision rules, applied to a lab measurement and the control's view.

Written from OONI's spec (ts-017) and the behaviour its QA suite pins (qa/README.md), not from
OONI's code. Where OONI's two engines differ, the LTE "classic" analysis wins: it is what the QA
cases expect. Keys: ``dns_consistency``, the HTTP comparisons, ``http_experiment_failure`` and
``blocking`` / ``accessible`` (see docs/ooni.md for the table and the lab's exceptions).
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from netlab.addressing import INTERNET_ASN, LAB_INTERNET, PROXY_BLOCK, is_lab_bogon, isp_asn
from netlab.target import Target, host_is_ip
from probes.streams import endpoint
from probes.th import helper_ports

# Addresses of sites get a private 32-bit ASN each (RFC 6996), so two sites never share one:
# OONI's "same ASN" consistency rule then means "same site", as it should in a small lab.
SITE_ASN_BASE = 4_200_000_000
INFRA = ipaddress.ip_network("198.18.0.0/28")
DNS_NAME_ERROR = "dns_name_error"  # how OONI's test helper reports NXDOMAIN
DNS_BOGON = "dns_bogon_error"
# Response headers too common to tell two servers apart (OONI's list for headers_match).
COMMON_HEADERS = frozenset({
    "date", "content-type", "server", "cache-control", "vary", "set-cookie", "location", "expires",
    "x-powered-by", "content-encoding", "last-modified", "accept-ranges", "pragma", "x-frame-options",
    "etag", "x-content-type-options", "age", "via", "p3p", "x-xss-protection", "content-language",
    "cf-ray", "strict-transport-security", "link", "x-varnish",
})
BODY_PROPORTION = 0.7
#: Title words shorter than this many bytes (UTF-8) are ignored (minipipeline/httpdiff.go).
TITLE_WORD_BYTES = 5

Pair = tuple[str | bool | None, bool | None]
OK: Pair = (False, True)
DOWN: Pair = (False, False)
UNKNOWN: Pair = (None, None)


@functools.lru_cache(maxsize=1 << 16)  # a run's addresses are its sites' and ISPs': few, each seen again and again
def lab_asn(ip: str) -> int:
    """The ASN of a lab address: sites one each, ISP addresses and proxies their ISP's, 0 for bogons."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return 0
    if addr.version != 4:
        return 0
    if addr in PROXY_BLOCK:
        index = int(addr) - int(PROXY_BLOCK.network_address)
        return isp_asn(index) if index else INTERNET_ASN
    if addr in INFRA:
        return INTERNET_ASN
    if addr in LAB_INTERNET:
        return SITE_ASN_BASE + int(addr) - int(LAB_INTERNET.network_address)
    if addr in ipaddress.ip_network("10.0.0.0/8"):
        index = addr.packed[1]
        return isp_asn(index) if index else INTERNET_ASN
    return 0


def depth_of(entry: dict[str, Any]) -> int:
    for t in entry.get("tags") or []:
        if isinstance(t, str) and t.startswith("depth="):
            return int(t[6:]) if t[6:].isdigit() else 0
    return 0


def fetches_body(entry: dict[str, Any]) -> bool:
    """A flow that could fetch the page (web_connectivity 0.5's ``fetch_body=true``; entries of
    probes that write no such tag count as fetching)."""
    return "fetch_body=false" not in (entry.get("tags") or [])


def classic_flow(entry: dict[str, Any]) -> bool:
    """An entry OONI's classic analysis reads (minipipeline/classic.go): a fetching flow, at depth 0
    to an address of the system resolver (tagged ``classic``). The lab keeps ``classic`` off its
    redirect hops, so there every fetching flow counts."""
    return fetches_body(entry) and (depth_of(entry) > 0 or "classic" in (entry.get("tags") or [])
                                    or not any(str(t).startswith("fetch_body=") for t in entry.get("tags") or []))


# The test helper writes its failures in legacy names (oohelperd dns.go, tcptls.go, http.go).
_TH_DNS_SERVER_FAILURE = {"dns_non_recoverable_failure", "dns_refused_error", "dns_server_misbehaving",
                          "dns_temporary_failure"}
_TH_DNS_ERRORS = {"dns_nxdomain_error", "dns_no_answer", *_TH_DNS_SERVER_FAILURE, "dns_servfail_error"}


def th_dns_failure(failure: str | None) -> str | None:
    """``control.dns.failure``: NXDOMAIN is dns_name_error, "no answer" null (with no addresses),
    the server's refusals dns_server_failure, anything else unknown_error (oohelperd dns.go)."""
    if failure is None or failure == "dns_no_answer":
        return None
    if failure == "dns_nxdomain_error":
        return DNS_NAME_ERROR
    if failure in _TH_DNS_SERVER_FAILURE:
        return "dns_server_failure"
    return "unknown_error"


def th_tcp_failure(failure: str | None) -> str | None:
    """``control.tcp_connect[*].failure`` (oohelperd tcptls.go): timeouts and refusals keep their
    meaning, anything else is connect_error."""
    if failure is None or failure == "generic_timeout_error":
        return failure
    return "connection_refused_error" if failure == "connection_refused" else "connect_error"


def th_http_failure(failure: str | None, stage: str | None) -> str | None:
    """``control.http_request.failure`` (oohelperd http.go): a DNS error (NXDOMAIN, no answer, the
    server's refusals, a timeout while resolving) is dns_lookup_error; a timeout and a refusal keep
    their meaning; the rest (a bogon answer, TLS errors, too many redirects...) is unknown_error."""
    if failure is None:
        return None
    # The helper's resolver refuses bogon answers: that error is not one of the DNS ones it maps.
    if failure in _TH_DNS_ERRORS or (stage == "dns" and failure == "generic_timeout_error"):
        return "dns_lookup_error"
    if failure == "generic_timeout_error":
        return failure
    return "connection_refused_error" if failure == "connection_refused" else "unknown_error"


# OONI's title: the first <title> without attributes, 1 to 512 characters and no "<" inside,
# neither unescaped nor trimmed (measurexlite/web.go).
_OONI_TITLE = re.compile(r"(?i)<title>([^<]{1,512})</title>")


def ooni_title(body: Any) -> str:
    """The title OONI's probe and test helper extract from a body (MaybeBinaryData)."""
    if isinstance(body, dict):
        body = base64.b64decode(body.get("data") or "").decode("utf-8", errors="replace")
    m = _OONI_TITLE.search(body or "")
    return m.group(1) if m else ""


def body_length(body: Any) -> int:
    """Length in bytes of a MaybeBinaryData body."""
    if isinstance(body, dict):
        return len(base64.b64decode(body.get("data") or ""))
    body = body or ""
    # An ASCII body is as long in bytes as in characters (isascii reads a flag, it does not scan):
    # only other bodies are encoded to be counted (64 KiB each).
    return len(body) if body.isascii() else len(body.encode("utf-8"))


def _endpoint_ip(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[0].strip("[]")


@dataclass
class ControlView:
    """What the control vantage saw of one URL, small enough to keep one per URL in memory.

    ``tcp`` and ``tls`` hold the control's own depth-0 endpoints plus those it measured for the
    probes' addresses after the campaign (``harness.ooni.measure_th_endpoints``), with the
    probe's failure strings; ``th_response`` maps them to the test helper's."""

    url: str = ""
    dns_failure: str | None = None  # the control's lookup failure, OONI's probe string
    addrs: list[str] = field(default_factory=list)
    tcp: dict[str, dict[str, Any]] = field(default_factory=dict)
    tls: dict[str, dict[str, Any]] = field(default_factory=dict)
    http_failure: str | None = None  # OONI's probe string; th_response maps it
    http_failed_stage: str | None = None
    status_code: int = -1
    body_length: int = -1
    title: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body_sha256: str | None = None

    @classmethod
    def of(cls, tk: dict[str, Any], url: str = "") -> ControlView:
        v = cls(url=url)
        system = [q for q in tk.get("queries") or [] if q.get("engine") == "system" and depth_of(q) == 0]
        v.addrs = list((tk.get("x_resolved") or {}).get("system") or [])
        if system:
            v.dns_failure = tk.get("dns_experiment_failure")
            if not v.addrs and v.dns_failure is None:
                v.dns_failure = "dns_no_answer"
        for e in tk.get("tcp_connect") or []:
            if depth_of(e) == 0:
                failure = (e.get("status") or {}).get("failure")
                # keyed as endpoints_for names them ("[ip]:port" for IPv6), not "ip:port"
                v.tcp[endpoint(e["ip"], e["port"])] = {"status": failure is None, "failure": failure}
        for e in tk.get("tls_handshakes") or []:
            if depth_of(e) == 0:
                v.tls[e["address"]] = {"server_name": e.get("server_name"), "status": e.get("failure") is None,
                                       "failure": e.get("failure")}
        if tk.get("x_failed_stage"):
            v.http_failure = tk.get("failure") or "unknown_failure: the control's fetch failed"
            v.http_failed_stage = tk.get("x_failed_stage")
        else:
            resp = (tk.get("requests") or [{}])[0].get("response") or {}
            v.status_code = resp.get("code") or -1
            length = tk.get("x_body_length")
            v.body_length = int(length) if length is not None else -1
            v.title = ooni_title(resp.get("body"))
            v.headers = dict(resp.get("headers") or {})
            v.body_sha256 = tk.get("x_body_sha256")
        return v

    def add_endpoints(self, endpoints: dict[str, dict[str, Any]]) -> None:
        """Endpoints the control measured for the probes' addresses (``th_endpoints.jsonl``):
        ``{"ip:port": {"tcp": {"status", "failure"}, "tls": {"server_name", "status", "failure"} | null}}``."""
        for ep, seen in endpoints.items():
            self.tcp.setdefault(ep, seen["tcp"])
            if seen.get("tls") is not None:
                self.tls.setdefault(ep, seen["tls"])

    @staticmethod
    def unreachable() -> dict[str, Any]:
        """The test-helper response of a probe that could not reach its test helper (zero values)."""
        return {"dns": {"failure": None, "addrs": []}, "tcp_connect": {}, "tls_handshake": {},
                "http_request": {"body_length": -1, "failure": None, "title": "", "headers": {},
                                 "status_code": -1},
                "ip_info": {}}

    def endpoints_for(self, probe_addrs: list[str]) -> list[str]:
        """The endpoints oohelperd measures for a probe that resolved ``probe_addrs``: every
        non-bogon address of the probe's and its own, on the URL's ports (ipinfo.go), sorted."""
        ips = [a for a in dict.fromkeys([*probe_addrs, *self.addrs]) if not is_lab_bogon(a)]
        return sorted(endpoint(ip, port) for ip in ips for port in helper_ports(self.url))

    def th_response(self, probe_addrs: list[str]) -> dict[str, Any]:
        """This view as OONI's test helper answers a probe that resolved ``probe_addrs``: ``dns``,
        ``tcp_connect``, ``tls_handshake`` (port 443 only), ``http_request`` and ``ip_info``
        (flags: 1 probe resolved, 2 TH resolved, 4 bogon, 8 TLS valid), in its failure strings."""
        tcp: dict[str, dict[str, Any]] = {}
        tls: dict[str, dict[str, Any]] = {}
        for ep in self.endpoints_for(probe_addrs):
            if ep in self.tcp:
                seen = self.tcp[ep]
                tcp[ep] = {"status": seen["status"], "failure": th_tcp_failure(seen["failure"])}
            if ep.endswith(":443") and ep in self.tls:
                tls[ep] = dict(self.tls[ep])
        info: dict[str, dict[str, int]] = {}
        for a in dict.fromkeys([*probe_addrs, *self.addrs]):
            flags = (1 if a in probe_addrs else 0) | (2 if a in self.addrs else 0)
            flags |= 4 if is_lab_bogon(a) else 0
            if any(_endpoint_ip(ep) == a and t["status"] for ep, t in tls.items()):
                flags |= 8
            info[a] = {"asn": lab_asn(a), "flags": flags}
        failed = self.http_failure is not None
        return {
            "dns": {"failure": th_dns_failure(self.dns_failure), "addrs": list(self.addrs)},
            "tcp_connect": tcp,
            "tls_handshake": tls,
            "quic_handshake": {},
            "http_request": {"body_length": -1 if failed else self.body_length,
                             "discovered_h3_endpoint": "",
                             "failure": th_http_failure(self.http_failure, self.http_failed_stage),
                             "title": "" if failed else self.title, "headers": {} if failed else self.headers,
                             "status_code": -1 if failed else self.status_code},
            "http3_request": None,
            "ip_info": info,
        }


def experiment_failure(tk: dict[str, Any]) -> str | None:
    """OONI's final ``http_experiment_failure``: the failure that ended the fetch, DNS ones included
    (LTE), except a lookup without addresses (dns_no_answer) or with loopback ones only."""
    stage, failure = tk.get("x_failed_stage"), tk.get("failure")
    if stage is None:
        return None
    if stage == "dns" and failure in ("dns_no_answer", DNS_BOGON):
        return None
    return failure


def dns_consistency(url: str, tk: dict[str, Any], c: ControlView) -> str | None:
    """"consistent" / "inconsistent" for the probe's depth-0 lookup against the control's."""
    if host_is_ip(Target.parse(url).host):
        return "consistent"
    probe_failure = tk.get("dns_experiment_failure")
    addrs = set((tk.get("x_resolved") or {}).get("system") or [])
    if probe_failure is not None or not addrs:
        # Both failing is an expected failure (the site is down); only the probe failing is not.
        return "consistent" if c.dns_failure is not None or not c.addrs else "inconsistent"
    if c.dns_failure is not None or not c.addrs:
        return "inconsistent"  # "ghost" DNS: the probe resolves a name the control cannot
    if addrs & set(c.addrs):
        return "consistent"
    probe_asns = {lab_asn(a) for a in addrs} - {0}
    th_asns = {lab_asn(a) for a in c.addrs} - {0}
    return "consistent" if probe_asns & th_asns else "inconsistent"


def final_response(tk: dict[str, Any]) -> dict[str, Any] | None:
    """The final response of a fetch that got one (requests are in time-reverse order)."""
    if tk.get("x_failed_stage") is not None or not tk.get("requests"):
        return None
    return tk["requests"][0].get("response") or None


def title_words(title: str) -> set[str]:
    """OONI's title words: split on single spaces, lower-cased, kept when 5 bytes or longer."""
    return {w.lower() for w in title.split(" ") if len(w.encode("utf-8")) >= TITLE_WORD_BYTES}


def compare_http(resp: dict[str, Any] | None, c: ControlView) -> dict[str, Any]:
    """body_proportion, body_length_match, status_code_match, headers_match and title_match, by
    web_connectivity 0.5's rules (minipipeline/analysis.go, httpdiff.go; docs/ooni.md): computed
    only for a final response (2xx, 4xx, 5xx) when the test helper fetched the page."""
    out: dict[str, Any] = {"body_length_match": None, "body_proportion": 0, "status_code_match": None,
                           "headers_match": None, "title_match": None}
    code = (resp or {}).get("code") or 0
    if resp is None or c.http_failure is not None or c.status_code <= 0 or code // 100 not in (2, 4, 5):
        return out
    length = body_length(resp.get("body"))
    # OONI compares lengths only when it read the whole of its own body (not truncated).
    if not resp.get("body_is_truncated") and length > 0 and c.body_length > 0:
        proportion = min(length, c.body_length) / max(length, c.body_length)
        out["body_proportion"] = proportion
        out["body_length_match"] = proportion > BODY_PROPORTION
    if code == c.status_code:
        out["status_code_match"] = True
    elif c.status_code // 100 == 2:
        out["status_code_match"] = False
    probe_keys = {k.lower() for k in resp.get("headers") or {}} - COMMON_HEADERS
    control_keys = {k.lower() for k in c.headers} - COMMON_HEADERS
    out["headers_match"] = bool(probe_keys & control_keys)
    out["title_match"] = title_words(ooni_title(resp.get("body"))) == title_words(c.title)
    return out


def _final_url(tk: dict[str, Any], url: str) -> str:
    hops: list[str] = tk.get("x_redirects") or [url]
    return hops[-1]


def decide(tk: dict[str, Any], c: ControlView | None, consistency: str | None, url: str,
           http: dict[str, Any] | None = None) -> Pair:
    """(blocking, accessible) by OONI's classic rules: the deepest failing step decides, against
    what the test helper saw of it; an inconsistent DNS answer turns every non-success into "dns".
    ``http``: compare_http's keys of the final response against ``c``, when already computed (the
    body's length and title cost more than the rest of the decision)."""
    stage = tk.get("x_failed_stage")
    https_final = stage is None and tk.get("requests") and _final_url(tk, url).lower().startswith("https://")
    if c is None:  # the test helper was out of reach: only a secure final response says anything
        return OK if https_final else UNKNOWN
    pair = _classic(tk, c, stage, bool(https_final), http)
    if consistency == "inconsistent" and pair != OK:
        return ("dns", False)
    return pair


def _classic(tk: dict[str, Any], c: ControlView, stage: str | None, https_final: bool,
             http: dict[str, Any] | None) -> Pair:
    th_http_ok = c.http_failure is None
    depth = tk.get("x_failed_depth") or 0
    failure = tk.get("failure")
    if stage is None:
        if https_final:
            return OK  # OONI trusts any response over TLS (ooni/probe#2661)
        if not th_http_ok:
            return UNKNOWN
        cmp = http if http is not None else compare_http(final_response(tk), c)
        if cmp["status_code_match"] and (cmp["body_length_match"] or cmp["headers_match"] or cmp["title_match"]):
            return OK
        return ("http-diff", False)
    if stage == "http":
        return DOWN if not th_http_ok else ("http-failure", False)
    if stage == "tls":
        entry = _first([e for e in tk.get("tls_handshakes") or [] if depth_of(e) == depth and classic_flow(e)])
        th = c.tls.get(entry.get("address", "")) if depth == 0 and entry else None
        if th is not None:
            return DOWN if not th["status"] else ("http-failure", False)
        return ("http-failure", False) if th_http_ok else UNKNOWN
    if stage == "tcp":
        tried = [e for e in tk.get("tcp_connect") or [] if depth_of(e) == depth and classic_flow(e)]
        th_tcp = [c.tcp[k] for e in tried if (k := endpoint(e["ip"], e["port"])) in c.tcp] if depth == 0 else []
        if th_tcp:
            return ("tcp_ip", False) if any(t["status"] for t in th_tcp) else DOWN
        return ("http-failure", False) if th_http_ok else UNKNOWN
    # stage == "dns"
    if failure == DNS_BOGON:  # the probe resolved loopback addresses only
        loopback_only = c.addrs and all(ipaddress.ip_address(a).is_loopback for a in c.addrs)
        return DOWN if loopback_only else ("dns", False)
    if depth == 0:
        return DOWN if (c.dns_failure is not None or not c.addrs) else ("dns", False)
    return ("dns", False) if th_http_ok else UNKNOWN


def _first(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return entries[0] if entries else {}
