"""OONI's web_connectivity rules (harness.ooni_rules) on hand-made test keys, and the scenario
keys of sites that misbehave on their own (loader and oracle)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from harness.ooni_rules import ControlView, compare_http, decide, dns_consistency, experiment_failure, lab_asn
from netlab.addressing import allocate_sites, isp_asn
from netlab.errors import ScenarioError
from netlab.loader import parse_scenario
from netlab.model import proxy_address
from netlab.oracle import expected_verdicts

URL = "http://www.example.com/"
OK_CONTROL = ControlView(addrs=["198.18.93.34"], status_code=200, body_length=100, title="Example Domain page",
                         headers={"X-Lab-Origin": "1"}, tcp={"198.18.93.34:80": {"status": True, "failure": None}})


def keys(stage: str | None = None, failure: str | None = None, addrs: tuple[str, ...] = ("198.18.93.34",),
         **extra: object) -> dict:
    k: dict = {"x_failed_stage": stage, "failure": failure, "x_resolved": {"system": list(addrs)},
               "dns_experiment_failure": failure if stage == "dns" and failure != "dns_bogon_error" else None,
               "requests": [], "tcp_connect": [], "tls_handshakes": []}
    k.update(extra)
    return k


def page(code: int = 200, body: str = "x" * 100, title: str = "Example Domain page") -> dict:
    return {"response": {"code": code, "body": f"<title>{title}</title>" + body, "body_is_truncated": False,
                         "headers": {"X-Lab-Origin": "1"}}}


def test_asns() -> None:
    assert lab_asn("10.3.0.2") == isp_asn(3) and lab_asn(str(proxy_address(2))) == isp_asn(2)
    assert lab_asn("198.18.1.1") != lab_asn("198.18.1.2") and lab_asn("127.0.0.1") == 0


def test_consistency() -> None:
    assert dns_consistency(URL, keys(), OK_CONTROL) == "consistent"
    assert dns_consistency(URL, keys(addrs=("10.10.34.35",)), OK_CONTROL) == "inconsistent"
    assert dns_consistency(URL, keys("dns", "dns_nxdomain_error", ()), OK_CONTROL) == "inconsistent"
    down = ControlView(dns_failure="dns_name_error")
    assert dns_consistency(URL, keys("dns", "dns_nxdomain_error", ()), down) == "consistent"
    assert dns_consistency(URL, keys(), down) == "inconsistent"  # ghost DNS
    assert dns_consistency("http://198.18.93.34/", keys(addrs=("10.1.1.1",)), OK_CONTROL) == "consistent"


@pytest.mark.parametrize(("k", "consistency", "expected"), [
    (keys(requests=[page()]), "consistent", (False, True)),
    (keys(requests=[page(451, "", "Blocked")]), "consistent", ("http-diff", False)),
    (keys(requests=[page(451, "", "Blocked")]), "inconsistent", ("dns", False)),
    (keys(requests=[page()]), "inconsistent", (False, True)),  # the ISP proxy: same page
    (keys("http", "connection_reset"), "consistent", ("http-failure", False)),
    (keys("tcp", "generic_timeout_error", tcp_connect=[{"ip": "198.18.93.34", "port": 80, "tags": ["depth=0"]}]),
     "consistent", ("tcp_ip", False)),
    (keys("tcp", "connection_refused", x_failed_depth=1,
          tcp_connect=[{"ip": "198.18.93.40", "port": 80, "tags": ["depth=1"]}]),
     "consistent", ("http-failure", False)),
    (keys("dns", "dns_nxdomain_error", ()), "inconsistent", ("dns", False)),
    (keys("dns", "dns_bogon_error", ("127.0.0.1",)), "inconsistent", ("dns", False)),
])
def test_decide(k: dict, consistency: str, expected: tuple) -> None:
    assert decide(k, OK_CONTROL, consistency, URL) == expected


def test_decide_when_the_site_is_down_or_the_helper_unreachable() -> None:
    down = ControlView(http_failure="ssl_invalid_certificate",
                       tls={"198.18.93.34:443": {"status": False, "failure": "x", "server_name": "e"}})
    tls_fail = keys("tls", "ssl_invalid_certificate", tls_handshakes=[{"address": "198.18.93.34:443"}])
    assert decide(tls_fail, down, "consistent", "https://www.example.com/") == (False, False)
    assert decide(keys(requests=[page()]), None, None, URL) == (None, None)
    assert decide(keys(requests=[page()]), None, None, "https://www.example.com/") == (False, True)


def test_experiment_failure_and_comparisons() -> None:
    assert experiment_failure(keys("dns", "dns_nxdomain_error", ())) == "dns_nxdomain_error"
    assert experiment_failure(keys("dns", "dns_no_answer", ())) is None
    assert experiment_failure(keys("dns", "dns_bogon_error", ("127.0.0.1",))) is None
    cmp = compare_http(page()["response"], OK_CONTROL)
    assert cmp["status_code_match"] and cmp["headers_match"] and cmp["title_match"]


SCENARIO = """
version: 1
name: sites
internet:
  sites:
    - {name: ok.test}
    - {name: gone.test, state: refused}
    - {name: cert.test, tls: {cert: expired}}
    - {name: hop.test, redirect: {to: "https://ok.test/"}}
    - {name: loop.test, redirect: {hops: 11}}
    - {name: cap.test, response: {status: 503, body: "<title>wait</title>"}, only_for: [isp]}
    - {name: px.test}
isps:
  - name: isp
    resolver:
      rules:
        - {match: {domain: px.test}, action: proxy}
    dpi:
      rules:
        - {match: {sni: ok.test}, action: reset}
"""


def test_oracle_for_misbehaving_sites() -> None:
    sc = parse_scenario(SCENARIO)
    sites = allocate_sites({s.name: s.address for s in sc.sites})
    got = {k: v.verdict.value for k, v in expected_verdicts(sc, sites).items()}
    assert got[("isp", "https://gone.test/")] == got[("control", "https://gone.test/")] == "site_down"
    assert got[("isp", "https://cert.test/")] == "site_down" and got[("isp", "http://cert.test/")] == "ok"
    assert got[("isp", "http://hop.test/")] == "tls.reset"  # the redirect leads into the censor
    assert got[("isp", "https://loop.test/")] == "site_down"
    assert got[("isp", "http://cap.test/")] == "http.diff" and got[("control", "http://cap.test/")] == "ok"
    assert got[("isp", "https://px.test/")] == "ok"


@pytest.mark.parametrize(("snippet", "message"), [
    ("- {name: a.test, state: gone}", "expected one of"),
    ("- {name: a.test, only_for: [nobody]}", "no ISP named"),
    ("- {name: a.test, redirect: {to: 'https://elsewhere.test/'}}", "redirects stay inside the lab"),
    ("- {name: a.test, redirect: {to: 'http://'}}", "broken Location"),
    ("- {name: a.test, state: unresolvable, only_for: [isp]}", "authoritative DNS"),
    ("- {name: a.test, tls: {cert: expired}, only_for: [isp]}", "every client"),
    ("- {name: a.test, address: 198.19.255.1}", "reserved"),
    ("- {name: a.test, response: {body_file: missing.html}}", "cannot read"),
])
def test_loader_errors(snippet: str, message: str) -> None:
    text = f"version: 1\nname: x\ninternet:\n  sites:\n    {snippet}\nisps:\n  - name: isp\n"
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(text)


def test_probe_settings_and_ooni_pins() -> None:
    sc = parse_scenario("version: 1\nname: x\nprobe: {test_helper: th.test, http_total_timeout: 8}\n"
                        "internet:\n  sites:\n    - {name: a.test}\n    - {name: th.test}\n"
                        "isps:\n  - name: isp\ntargets: [http://a.test/]\n"
                        "expect_ooni: {isp: {http://a.test/: {blocking: false, accessible: true}}}\n")
    assert sc.probe == {"test_helper": "https://th.test/", "http_total_timeout": 8.0}
    assert sc.expect_ooni == {"isp": {"http://a.test/": {"blocking": False, "accessible": True}}}
    assert IPv4Address("198.19.255.1") == proxy_address(1)


# --- web_connectivity 0.5's comparisons and test helper (docs/ooni.md, rule by rule) ---

from harness.ooni_rules import (  # noqa: E402
    ooni_title,
    th_dns_failure,
    th_http_failure,
    th_tcp_failure,
    title_words,
)


@pytest.mark.parametrize(("mine", "theirs", "match"), [
    ("Example Domain page", "Example Domain page", True),
    ("Example Domain page", "example DOMAIN Page", True),  # lower-cased
    ("Example Domain", "Example Domain page", True),  # "page" is under 5 bytes: ignored
    ("Breaking: sites blocked", "Breaking news about sites", False),  # one shared word is not enough
    ("", "", True),  # no long words on either side
    ("Блок", "Блок", True),  # 8 bytes in UTF-8: a long word
    ("Блок", "Другой", False),
])
def test_title_match_needs_every_long_word(mine: str, theirs: str, match: bool) -> None:
    c = ControlView(addrs=["198.18.93.34"], status_code=200, body_length=100, title=theirs)
    resp = {"code": 200, "body": f"<title>{mine}</title>", "body_is_truncated": False, "headers": {}}
    assert compare_http(resp, c)["title_match"] is match
    assert title_words("a  Bcdef") == {"bcdef"}


def test_ooni_title_extraction() -> None:
    assert ooni_title("<TITLE>Big &amp; Small</TITLE>") == "Big &amp; Small"  # not unescaped
    assert ooni_title('<title lang="en">x</title>') == ""  # no attributes
    assert ooni_title("<title></title>") == ""
    assert ooni_title("<title>" + "x" * 513 + "</title>") == ""
    assert ooni_title({"format": "base64", "data": "PHRpdGxlPmE8L3RpdGxlPg=="}) == "a"


@pytest.mark.parametrize(("code", "th_code", "match"), [(200, 200, True), (404, 404, True), (451, 200, False),
                                                         (200, 404, None), (301, 200, "no final")])
def test_status_code_match(code: int, th_code: int, match: object) -> None:
    c = ControlView(addrs=["198.18.93.34"], status_code=th_code, body_length=100)
    got = compare_http({"code": code, "body": "", "headers": {}}, c)
    if match == "no final":  # a 3xx is no final response: nothing is compared
        assert got == {"body_length_match": None, "body_proportion": 0, "status_code_match": None,
                       "headers_match": None, "title_match": None}
    else:
        assert got["status_code_match"] is match


def test_headers_and_body_rules() -> None:
    c = ControlView(addrs=["a"], status_code=200, body_length=1000, headers={"Server": "x", "Date": "y"})
    resp = {"code": 200, "body": "x" * 700, "body_is_truncated": False, "headers": {"Server": "z"}}
    got = compare_http(resp, c)
    assert got["headers_match"] is False  # only common headers on both sides
    assert got["body_proportion"] == 0.7 and got["body_length_match"] is False  # strictly above 0.7
    truncated = compare_http({**resp, "body_is_truncated": True}, c)
    assert truncated["body_proportion"] == 0 and truncated["body_length_match"] is None


def test_test_helper_failure_strings() -> None:
    assert th_dns_failure("dns_nxdomain_error") == "dns_name_error"
    assert th_dns_failure("dns_no_answer") is None
    assert th_dns_failure("dns_refused_error") == "dns_server_failure"
    assert th_dns_failure("generic_timeout_error") == th_dns_failure("dns_servfail_error") == "unknown_error"
    assert th_tcp_failure("connection_refused") == "connection_refused_error"
    assert th_tcp_failure("connection_reset") == th_tcp_failure("host_unreachable") == "connect_error"
    assert th_tcp_failure("generic_timeout_error") == "generic_timeout_error"
    assert th_http_failure("dns_nxdomain_error", "dns") == th_http_failure("dns_no_answer", "dns") == "dns_lookup_error"
    assert th_http_failure("generic_timeout_error", "dns") == "dns_lookup_error"
    assert th_http_failure("generic_timeout_error", "http") == "generic_timeout_error"
    assert th_http_failure("connection_refused", "tcp") == "connection_refused_error"
    assert th_http_failure("dns_bogon_error", "dns") == "unknown_error"
    assert th_http_failure("ssl_unknown_authority", "tls") == "unknown_error"


def test_the_helper_answers_for_the_probes_endpoints() -> None:
    c = ControlView(url="http://www.example.com/", addrs=["198.18.93.34"], status_code=200, body_length=10,
                    dns_failure=None,
                    tcp={"198.18.93.34:80": {"status": True, "failure": None},
                         "198.18.93.34:443": {"status": True, "failure": None}},
                    tls={"198.18.93.34:443": {"server_name": "www.example.com", "status": True, "failure": None}})
    c.add_endpoints({"198.18.83.41:80": {"tcp": {"status": False, "failure": "connection_reset"}, "tls": None},
                     "198.18.83.41:443": {"tcp": {"status": False, "failure": "connection_refused"}, "tls": None}})
    th = c.th_response(["198.18.83.41", "10.10.34.35"])  # a bogon is never measured
    assert th["tcp_connect"] == {
        "198.18.83.41:443": {"status": False, "failure": "connection_refused_error"},
        "198.18.83.41:80": {"status": False, "failure": "connect_error"},
        "198.18.93.34:443": {"status": True, "failure": None},
        "198.18.93.34:80": {"status": True, "failure": None}}
    assert list(th["tls_handshake"]) == ["198.18.93.34:443"]
    assert th["ip_info"]["198.18.93.34"]["flags"] == 2 | 8 and th["ip_info"]["10.10.34.35"]["flags"] == 1 | 4
    https = ControlView(url="https://www.example.com:8443/", addrs=["198.18.93.34"])
    assert https.endpoints_for(["198.18.93.35"]) == ["198.18.93.34:8443", "198.18.93.35:8443"]
    down = ControlView(url="http://www.example.com/", dns_failure="dns_no_answer", http_failure="dns_no_answer",
                       http_failed_stage="dns")
    th = down.th_response([])
    assert th["dns"] == {"failure": None, "addrs": []}
    assert th["http_request"]["failure"] == "dns_lookup_error" and th["http_request"]["status_code"] == -1


def test_the_controls_own_ipv6_endpoints_reach_the_helpers_answer() -> None:
    """The control's own depth-0 connects are keyed as OONI writes endpoints ("[ip]:port" for IPv6),
    the key th_response looks them up by: an IPv6 endpoint the control measured is in the answer."""
    tk = {"x_resolved": {"system": ["198.18.1.1", "2001:2::c612:101"]},
          "tcp_connect": [{"ip": "198.18.1.1", "port": 443, "status": {"failure": None}},
                          {"ip": "2001:2::c612:101", "port": 443, "status": {"failure": "connection_refused"}}],
          "tls_handshakes": [{"address": "198.18.1.1:443", "server_name": "a.test", "failure": None}],
          "requests": [{"response": {"code": 200, "body": "", "headers": {}}}], "x_body_length": 0}
    view = ControlView.of(tk, "https://a.test/")
    th = view.th_response(["198.18.1.1", "2001:2::c612:101"])
    assert th["tcp_connect"] == {"198.18.1.1:443": {"status": True, "failure": None},
                                 "[2001:2::c612:101]:443": {"status": False, "failure": "connection_refused_error"}}
    # The probe's connect to the same IPv6 endpoint timed out: the helper's success there makes it
    # tcp_ip blocking. Had the view missed its IPv6 endpoints, the helper's fetch would only make it
    # an http-failure.
    down_v6 = keys("tcp", "generic_timeout_error", ("2001:2::c612:101",),
                   tcp_connect=[{"ip": "2001:2::c612:101", "port": 443, "tags": ["depth=0"],
                                 "status": {"failure": "generic_timeout_error"}}])
    ok_v6 = ControlView.of({**tk, "tcp_connect": [{**tk["tcp_connect"][1], "status": {"failure": None}}]},
                           "https://a.test/")
    assert decide(down_v6, ok_v6, "consistent", "https://a.test/") == ("tcp_ip", False)
