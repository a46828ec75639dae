"""Dual stack (internet.ipv6): the address plan, loader errors, what the compiler writes (links,
routes, firewall per family, zones, origins) and what the oracle concludes when a censor blocks
one family only; the probes' A-then-AAAA lookup against a real UDP server."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Network, ip_network
from pathlib import Path

import dns.message
import dns.rrset
import pytest
from test_loader import err
from test_probes_support import DnsServer, make_context, run

from netlab.addressing import SITES_V6, is_lab_bogon, link_v6, v6_of
from netlab.compile import compile_lab
from netlab.compile.firewall import match_exprs
from netlab.hostsetup import ipv6_sysctls
from netlab.loader import load_scenario, parse_scenario
from netlab.model import Match
from netlab.oracle import expect_family, expected_verdicts
from netlab.plan import host_from_dict, host_to_dict
from netlab.target import Target
from netlab.verdict import Verdict
from probes.dns import DnsProbe

ROOT = Path(__file__).resolve().parents[2]
DUAL = ROOT / "scenarios" / "dual-stack.yaml"
BASE = """version: 1
name: t
internet:
  ipv6: true
  sites:
    - name: a.test
    - name: b.test
"""


def test_address_plan() -> None:
    assert v6_of(IPv4Address("198.18.1.1")) == IPv6Address("2001:2::c612:101")
    assert link_v6(IPv4Interface("10.1.0.2/24")) == link_v6(IPv4Interface("10.1.0.2/24"))
    assert str(link_v6(IPv4Interface("10.1.0.2/24"))) == "2001:2:0:3::2/64"  # ISP 1's access link
    assert str(link_v6(IPv4Interface("10.1.255.1/24"))) == "2001:2:0:4::1/64"  # its uplink
    assert str(link_v6(IPv4Interface("10.0.0.2/24"))) == "2001:2:0:1::2/64"  # the control's
    nets = {link_v6(IPv4Interface(f"10.{i}.{y}.1/24")).network for i in range(250) for y in (0, 255)}
    assert len(nets) == 500 and SITES_V6 not in nets
    assert all(n.subnet_of(IPv6Network("2001:2::/48")) for n in nets)
    assert not is_lab_bogon("2001:2::c612:101") and is_lab_bogon("::1") and is_lab_bogon("fd00::1")


@pytest.mark.parametrize(("snippet", "key", "words"), [
    ("    - name: c.test\n      address: '2001:2::5'\n", "internet.sites[2].address", "only with internet.ipv6"),
    ("isps:\n  - name: x\n    firewall:\n      rules:\n        - match: {ip: '2001:2::1'}\n          action: drop\n",
     "isps[0].firewall.rules[0].match.ip", "only with internet.ipv6"),
])
def test_ipv6_needs_the_switch(snippet: str, key: str, words: str) -> None:
    e = err(BASE.replace("  ipv6: true\n", "") + snippet)
    assert e.key == key and words in str(e)


@pytest.mark.parametrize(("snippet", "key", "words"), [
    ("    - name: c.test\n      addresses: [198.18.5.5, '2001:3::1']\n", "internet.sites[2].addresses",
     "outside the lab internet's IPv6 sites 2001:2::/64"),
    ("    - name: c.test\n      address: '2001:2::c612:2'\n", "internet.sites[2].address", "infrastructure"),
    ("    - name: c.test\n      address: '2001:2:0:3::2'\n", "internet.sites[2].address", "outside"),
    ("    - name: c.test\n      addresses: ['2001:2::7', '2001:2::7']\n", "internet.sites[2].addresses",
     "listed twice"),
    ("    - name: c.test\n      records: {AAAA: '2001:2::9'}\n", "internet.sites[2].records.AAAA",
     "are its IPv6 addresses"),
    ("isps:\n  - name: x\n    firewall:\n      rules:\n        - match: {ip: '2001:2::1', family: 4}\n"
     "          action: drop\n", "isps[0].firewall.rules[0].match.family", "could never match"),
    ("isps:\n  - name: x\n    firewall:\n      rules:\n        - match: {site: a.test, family: 5}\n"
     "          action: drop\n", "isps[0].firewall.rules[0].match.family", "4 or 6"),
    ("isps:\n  - name: x\n    dpi:\n      rules:\n        - match: {sni: a.test, cidr: '2001:2::/64', family: 4}\n"
     "          action: reset\n", "isps[0].dpi.rules[0].match.family", "could never match"),
    ("isps:\n  - name: x\n    shaping:\n      - match: {sni: a.test, family: 7}\n"
     "        rate: 1mbit\n", "isps[0].shaping[0].match.family", "4 or 6"),
])
def test_bad_dual_stack_input(snippet: str, key: str, words: str) -> None:
    e = err(BASE + snippet)
    assert e.key == key, str(e)
    assert words in str(e) and str(e).startswith("s.yaml:")


def test_family_without_ipv6_is_an_error() -> None:
    e = err(BASE.replace("  ipv6: true\n", "") + "isps:\n  - name: x\n    firewall:\n      rules:\n"
            "        - match: {site: a.test, family: 4}\n          action: drop\n")
    assert e.key == "isps[0].firewall.rules[0].match.family" and "internet.ipv6" in str(e)


def test_sites_get_both_families() -> None:
    s = parse_scenario(BASE + "    - name: c.test\n      addresses: [198.18.60.6, '2001:2::60:6']\n", source="s.yaml")
    addrs = s.site_addresses()
    assert addrs.all6("a.test") == (v6_of(addrs["a.test"]),)
    assert addrs.all("c.test") == (IPv4Address("198.18.60.6"),)
    assert addrs.all6("c.test") == (IPv6Address("2001:2::60:6"),)
    v4only = parse_scenario(BASE.replace("  ipv6: true\n", ""), source="s.yaml")
    assert v4only.site_addresses().all6("a.test") == ()


def test_compiled_hosts_links_and_routes() -> None:
    plan = compile_lab(load_scenario(DUAL), servers=[])
    assert all(h.ipv6 for h in plan.hosts.values())
    client = plan.hosts["v4censor"]
    assert str(client.interfaces[0].address6) == "2001:2:0:3::2/64"
    assert any(r.dst == SITES_V6 and str(r.via) == "2001:2:0:3::1" for r in client.routes)
    router = plan.hosts["v4censor.gw"]
    assert any(r.dst == SITES_V6 and str(r.via) == "2001:2:0:4::2" for r in router.routes)
    inet = plan.hosts["inet"]
    assert any(r.dst == SITES_V6 and r.local for r in inet.routes)
    assert any(r.dst == ip_network("2001:2:0:3::/64") and str(r.via) == "2001:2:0:4::1" for r in inet.routes)
    # hosts.json (the compose backend's hostd) keeps both families.
    again = host_from_dict(json.loads(json.dumps(host_to_dict(router))))
    assert again.ipv6 and again.interfaces[0].address6 == router.interfaces[0].address6
    assert [(r.dst, r.via) for r in again.routes] == [(r.dst, r.via) for r in router.routes]
    # A v4-only lab: no IPv6 anywhere.
    plain = compile_lab(load_scenario(ROOT / "scenarios" / "firewall.yaml"), servers=[])
    assert not any(h.ipv6 or any(i.address6 for i in h.interfaces) for h in plain.hosts.values())


def test_ipv6_switches_per_host() -> None:
    plan = compile_lab(load_scenario(DUAL), servers=[])
    router, inet = ipv6_sysctls(plan.hosts["v4censor.gw"]), ipv6_sysctls(plan.hosts["inet"])
    assert router["net.ipv6.conf.all.disable_ipv6"] == "0" and router["net.ipv6.conf.all.forwarding"] == "1"
    assert router["net.ipv6.conf.default.accept_dad"] == "0" and router["net.ipv6.conf.default.accept_ra"] == "0"
    assert inet["net.ipv6.ip_nonlocal_bind"] == "1" and "net.ipv6.ip_nonlocal_bind" not in router
    plain = compile_lab(load_scenario(ROOT / "scenarios" / "firewall.yaml"), servers=[])
    assert ipv6_sysctls(plain.hosts["inet"]) == {"net.ipv6.conf.all.disable_ipv6": "1",
                                                  "net.ipv6.conf.default.disable_ipv6": "1"}


def test_compiled_firewall_zones_and_origins() -> None:
    plan = compile_lab(load_scenario(DUAL), servers=[])
    sites = plan.site_addresses
    nft = plan.files["v4censor/firewall.nft"]
    v4, v6 = sites["v4blocked.test"], sites.all6("v4blocked.test")[0]
    assert f"ip daddr {v4} counter drop" in nft and f"ip6 daddr {v6} " not in nft  # family: 4
    w4, w6 = sites["v6blocked.test"], sites.all6("v6blocked.test")[0]
    assert f"ip6 daddr {w6} meta l4proto tcp counter reject with tcp reset" in nft and f"ip daddr {w4} " not in nft
    b4, b6 = sites["bothblocked.test"], sites.all6("bothblocked.test")[0]
    assert f"ip daddr {b4} counter drop" in nft and f"ip6 daddr {b6} counter drop" in nft  # no family: both
    assert "ip6 daddr 2001:2::60:6 meta l4proto tcp counter reject" in nft
    zones = "".join(text for path, text in plan.files.items() if path.startswith("inet/dns/") and
                    isinstance(text, str))
    assert "ownv6.test. IN AAAA 2001:2::60:6" in zones
    assert f"clean.test. IN AAAA {sites.all6('clean.test')[0]}" in zones
    origin = json.loads(plan.files["inet/origin.json"])
    own = next(s for s in origin["sites"] if s["name"] == "ownv6.test")
    assert own["addresses"] == ["198.18.60.6", "2001:2::60:6"]


def test_match_expressions_per_family() -> None:
    s = parse_scenario(BASE, source="s.yaml")
    addrs = s.site_addresses()
    assert match_exprs(Match(port=443), addrs) == ['iifname "down0" th dport 443']  # both families, one rule
    assert match_exprs(Match(port=443, family=6), addrs) == ['iifname "down0" meta nfproto ipv6 th dport 443']
    assert match_exprs(Match(cidr=ip_network("2001:2::/64")), addrs) == ['iifname "down0" ip6 daddr 2001:2::/64']
    assert len(match_exprs(Match(site="a.test"), addrs)) == 2


def test_oracle_one_family_blocked_leaks() -> None:
    s = load_scenario(DUAL)
    addrs = s.site_addresses()
    got = {url: e for (v, url), e in expected_verdicts(s, addrs).items() if v == "v4censor"}
    assert {u: e.verdict.value for u, e in got.items()} == {
        "https://v4blocked.test/": "ok", "https://v6blocked.test/": "ok", "https://ownv6.test/": "ok",
        "https://bothblocked.test/": "tcp.timeout", "https://range.test/": "tcp.reset", "https://sni.test/": "ok",
        "https://sniboth.test/": "tls.reset", "http://page.test/": "http.blockpage", "https://slow.test/": "ok",
        "https://intercepted.test/": "tls.cert_invalid",
        "http://hostname.test/": "http.reset", "https://gone.test/": "dns.nxdomain",
        "https://forged.test/": "dns.bogon", "https://clean.test/": "ok"}
    assert "blocks IPv4; the fetch goes over IPv6" in got["https://v4blocked.test/"].reason
    assert "acts on IPv4; the IPv6 handshake" in got["https://sni.test/"].reason
    assert "blocks IPv6; the fetch goes over IPv4" in got["https://v6blocked.test/"].reason
    isp = s.isp("v4censor")
    per_family = {(url, fam): expect_family(s, isp, Target.parse(url), addrs, fam).verdict
                  for url in ("https://v4blocked.test/", "https://v6blocked.test/", "https://ownv6.test/",
                              "https://sni.test/", "https://clean.test/", "https://sniboth.test/",
                              "http://page.test/", "https://slow.test/") for fam in (4, 6)}
    assert per_family == {
        ("https://v4blocked.test/", 4): Verdict.TCP_TIMEOUT, ("https://v4blocked.test/", 6): Verdict.OK,
        ("https://v6blocked.test/", 4): Verdict.OK, ("https://v6blocked.test/", 6): Verdict.TCP_RESET,
        ("https://ownv6.test/", 4): Verdict.OK, ("https://ownv6.test/", 6): Verdict.TCP_UNREACHABLE,
        ("https://sni.test/", 4): Verdict.TLS_RESET, ("https://sni.test/", 6): Verdict.OK,
        ("https://clean.test/", 4): Verdict.OK, ("https://clean.test/", 6): Verdict.OK,
        ("https://sniboth.test/", 4): Verdict.TLS_RESET, ("https://sniboth.test/", 6): Verdict.TLS_RESET,
        ("http://page.test/", 4): Verdict.HTTP_BLOCKPAGE, ("http://page.test/", 6): Verdict.HTTP_BLOCKPAGE,
        ("https://slow.test/", 4): Verdict.OK, ("https://slow.test/", 6): Verdict.THROTTLED}


def _both(query: dns.message.Message) -> list[bytes]:
    response = dns.message.make_response(query)
    q = query.question[0]
    value = "127.0.0.1" if q.rdtype == dns.rdatatype.A else "::1"
    response.answer.append(dns.rrset.from_text(q.name, 60, "IN", dns.rdatatype.to_text(q.rdtype), value))
    return [response.to_wire()]


def _a_only(query: dns.message.Message) -> list[bytes]:
    response = dns.message.make_response(query)
    if query.question[0].rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "10.10.34.35"))
    return [response.to_wire()]


def test_probe_asks_a_then_aaaa() -> None:
    server = DnsServer({"both.test": _both, "forged.test": _a_only})
    try:
        def probe(host: str, ipv6: bool) -> dict:
            return run(DnsProbe().run(Target.parse(f"https://{host}/"), make_context(server.port, ipv6=ipv6,
                                                                             lab_names=[host])))

        keys = probe("both.test", True)
        assert keys["x_resolved"]["system"] == ["127.0.0.1", "::1"]
        assert [q["query_type"] for q in keys["queries"]] == ["A", "AAAA"]
        assert keys["queries"][1]["answers"] == [{"answer_type": "AAAA", "ipv6": "::1", "ttl": 60}]
        assert keys["queries"][0]["transaction_id"] != keys["queries"][1]["transaction_id"]
        assert keys["dns_experiment_failure"] is None
        # A resolver that forges an A record only: the AAAA answer is empty, the lookup no failure.
        forged = probe("forged.test", True)
        assert forged["x_resolved"]["system"] == ["10.10.34.35"] and forged["dns_experiment_failure"] is None
        assert forged["queries"][1]["failure"] == "dns_no_answer"
        # A v4-only lab asks A alone.
        assert [q["query_type"] for q in probe("both.test", False)["queries"]] == ["A"]
    finally:
        server.close()


def test_oracle_a_lossy_family_leaks_as_a_dropped_one() -> None:
    """A shaping rule no handshake survives, on one family's addresses only, is a drop there: the
    probe fetches over the other family (both lost: tcp.timeout)."""
    s = parse_scenario(BASE + "isps:\n  - name: x\n    shaping:\n"
                       "      - {match: {site: a.test, family: 4}, loss: 100%}\n"
                       "      - {match: {site: b.test}, delay: 5s}\n", source="s.yaml")
    got = {url: e.verdict.value for (v, url), e in expected_verdicts(s, s.site_addresses()).items() if v == "x"}
    assert got["https://a.test/"] == "ok" and got["https://b.test/"] == "tcp.timeout"
