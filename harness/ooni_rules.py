"""OONI's web_connectivity decision rules, applied to a lab measurement and the control's view.

Written from OONI's spec (ts-017) and the behaviour its QA suite pins (qa/README.md), not from
OONI's code. Where OONI's two engines differ, the LTE "classic" analysis wins: it is what the QA
cases expect. Keys: ``dns_consistency``, the HTTP comparisons, ``http_experiment_failure`` and
``blocking`` / ``accessible`` (see docs/ooni.md for the table and the lab's exceptions).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from netlab.addressing import INTERNET_ASN, LAB_INTERNET, is_lab_bogon, isp_asn
from netlab.model import PROXY_BLOCK
from netlab.target import Target, host_is_ip

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
_WORD = re.compile(r"\w+", re.UNICODE)

Pair = tuple[str | bool | None, bool | None]
OK: Pair = (False, True)
DOWN: Pair = (False, False)
UNKNOWN: Pair = (None, None)


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


def _th_dns_failure(failure: str | None) -> str | None:
    return DNS_NAME_ERROR if failure == "dns_nxdomain_error" else failure


@dataclass
class ControlView:
    """What the control vantage saw of one URL, small enough to keep one per URL in memory."""

    dns_failure: str | None = None
    addrs: list[str] = field(default_factory=list)
    tcp: dict[str, dict[str, Any]] = field(default_factory=dict)
    tls: dict[str, dict[str, Any]] = field(default_factory=dict)
    http_failure: str | None = None
    status_code: int = -1
    body_length: int = -1
    title: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, tk: dict[str, Any]) -> ControlView:
        v = cls()
        system = [q for q in tk.get("queries") or [] if q.get("engine") == "system" and depth_of(q) == 0]
        v.addrs = list((tk.get("x_resolved") or {}).get("system") or [])
        v.dns_failure = _th_dns_failure(tk.get("dns_experiment_failure")) if system else None
        if not v.addrs and v.dns_failure is None and system:
            v.dns_failure = "dns_no_answer"
        for e in tk.get("tcp_connect") or []:
            if depth_of(e) == 0:
                failure = (e.get("status") or {}).get("failure")
                v.tcp[f"{e['ip']}:{e['port']}"] = {"status": failure is None, "failure": failure}
        for e in tk.get("tls_handshakes") or []:
            if depth_of(e) == 0:
                v.tls[e["address"]] = {"server_name": e.get("server_name"), "status": e.get("failure") is None,
                                       "failure": e.get("failure")}
        if tk.get("x_failed_stage"):
            v.http_failure = tk.get("failure") or "unknown_failure: the control's fetch failed"
        else:
            resp = (tk.get("requests") or [{}])[0].get("response") or {}
            v.status_code = resp.get("code") or -1
            v.body_length = tk.get("x_body_length") if tk.get("x_body_length") is not None else -1
            v.title = tk.get("x_title") or ""
            v.headers = dict(resp.get("headers") or {})
        return v

    @staticmethod
    def unreachable() -> dict[str, Any]:
        """The test-helper response of a probe that could not reach its test helper (zero values)."""
        return {"dns": {"failure": None, "addrs": []}, "tcp_connect": {}, "tls_handshake": {},
                "http_request": {"body_length": -1, "failure": None, "title": "", "headers": {},
                                 "status_code": -1},
                "ip_info": {}}

    def th_response(self, probe_addrs: list[str]) -> dict[str, Any]:
        """This view as OONI's test helper answers: ``dns``, ``tcp_connect``, ``tls_handshake``,
        ``http_request`` and ``ip_info`` (flags: 1 probe resolved, 2 TH resolved, 4 bogon, 8 TLS valid)."""
        info: dict[str, dict[str, int]] = {}
        for a in dict.fromkeys([*probe_addrs, *self.addrs]):
            flags = (1 if a in probe_addrs else 0) | (2 if a in self.addrs else 0)
            flags |= 4 if is_lab_bogon(a) else 0
            if any(ep.rsplit(":", 1)[0] == a and t["status"] for ep, t in self.tls.items()):
                flags |= 8
            info[a] = {"asn": lab_asn(a), "flags": flags}
        return {
            "dns": {"failure": self.dns_failure, "addrs": list(self.addrs)},
            "tcp_connect": self.tcp,
            "tls_handshake": self.tls,
            "http_request": {"body_length": self.body_length, "failure": self.http_failure, "title": self.title,
                             "headers": self.headers, "status_code": self.status_code},
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


def _title_words(title: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(title or "") if len(w) > 4}


def compare_http(resp: dict[str, Any] | None, c: ControlView) -> dict[str, Any]:
    """body_proportion, body_length_match, status_code_match, headers_match and title_match."""
    out: dict[str, Any] = {"body_length_match": None, "body_proportion": None, "status_code_match": None,
                           "headers_match": None, "title_match": None}
    if resp is None or c.http_failure is not None:
        return out
    body = resp.get("body")
    if isinstance(body, dict):  # base64 MaybeBinaryData: its decoded length
        import base64

        length = len(base64.b64decode(body.get("data") or ""))
    else:
        length = len((body or "").encode("utf-8"))
    # OONI compares bodies only when it read the whole of its own (not truncated).
    if not resp.get("body_is_truncated") and length > 0 and c.body_length > 0:
        proportion = min(length, c.body_length) / max(length, c.body_length)
        out["body_proportion"] = proportion
        out["body_length_match"] = proportion > BODY_PROPORTION
    if c.status_code // 100 == 2:
        out["status_code_match"] = resp.get("code") == c.status_code
    probe_keys = {k.lower() for k in resp.get("headers") or {}}
    control_keys = {k.lower() for k in c.headers}
    if probe_keys and control_keys:
        out["headers_match"] = bool((probe_keys & control_keys) - COMMON_HEADERS)
    mine, theirs = _title_words(_title_of(resp)), _title_words(c.title)
    if mine and theirs:
        out["title_match"] = bool(mine & theirs)
    return out


def _title_of(resp: dict[str, Any]) -> str:
    body = resp.get("body")
    if not isinstance(body, str):
        return ""
    m = re.search(r"<title[^>]*>(.*?)</title\s*>", body, re.IGNORECASE | re.DOTALL)
    return m.group(1) if m else ""


def _final_url(tk: dict[str, Any], url: str) -> str:
    return (tk.get("x_redirects") or [url])[-1]


def decide(tk: dict[str, Any], c: ControlView | None, consistency: str | None, url: str) -> Pair:
    """(blocking, accessible) by OONI's classic rules: the deepest failing step decides, against
    what the test helper saw of it; an inconsistent DNS answer turns every non-success into "dns"."""
    stage = tk.get("x_failed_stage")
    https_final = stage is None and tk.get("requests") and _final_url(tk, url).lower().startswith("https://")
    if c is None:  # the test helper was out of reach: only a secure final response says anything
        return OK if https_final else UNKNOWN
    pair = _classic(tk, c, stage, bool(https_final))
    if consistency == "inconsistent" and pair != OK:
        return ("dns", False)
    return pair


def _classic(tk: dict[str, Any], c: ControlView, stage: str | None, https_final: bool) -> Pair:
    th_http_ok = c.http_failure is None
    depth = tk.get("x_failed_depth") or 0
    failure = tk.get("failure")
    if stage is None:
        if https_final:
            return OK  # OONI trusts any response over TLS (ooni/probe#2661)
        if not th_http_ok:
            return UNKNOWN
        cmp = compare_http(final_response(tk), c)
        if cmp["status_code_match"] and (cmp["body_length_match"] or cmp["headers_match"] or cmp["title_match"]):
            return OK
        return ("http-diff", False)
    if stage == "http":
        return DOWN if not th_http_ok else ("http-failure", False)
    if stage == "tls":
        entry = _last(tk.get("tls_handshakes"))
        th = c.tls.get(entry.get("address", "")) if depth == 0 and entry else None
        if th is not None:
            return DOWN if not th["status"] else ("http-failure", False)
        return ("http-failure", False) if th_http_ok else UNKNOWN
    if stage == "tcp":
        tried = [e for e in tk.get("tcp_connect") or [] if depth_of(e) == depth]
        th = [c.tcp[k] for e in tried if (k := f"{e['ip']}:{e['port']}") in c.tcp] if depth == 0 else []
        if th:
            return ("tcp_ip", False) if any(t["status"] for t in th) else DOWN
        return ("http-failure", False) if th_http_ok else UNKNOWN
    # stage == "dns"
    if failure == DNS_BOGON:  # the probe resolved loopback addresses only
        loopback_only = c.addrs and all(ipaddress.ip_address(a).is_loopback for a in c.addrs)
        return DOWN if loopback_only else ("dns", False)
    if depth == 0:
        return DOWN if (c.dns_failure is not None or not c.addrs) else ("dns", False)
    return ("dns", False) if th_http_ok else UNKNOWN


def _last(entries: list[dict[str, Any]] | None) -> dict[str, Any]:
    return entries[-1] if entries else {}
