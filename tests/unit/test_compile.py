"""Compiler: address plan, hosts, and the dataplane config files."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from netlab.addressing import allocate_sites
from netlab.compile import compile_lab
from netlab.compile.dns import effective_resolver_rules
from netlab.loader import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]


def demo_plan():  # type: ignore[no-untyped-def]
    return compile_lab(load_scenario(ROOT / "scenarios/demo.yaml"))


def test_address_plan() -> None:
    got = allocate_sites({"a": None, "b": IPv4Address("198.18.1.2"), "c": None})
    assert got == {"a": IPv4Address("198.18.1.1"), "b": IPv4Address("198.18.1.2"), "c": IPv4Address("198.18.1.3")}


def test_hosts_links_and_vantages() -> None:
    plan = demo_plan()
    assert set(plan.hosts) == {"inet", "control", "isp-a", "isp-a.gw", "isp-b", "isp-b.gw"}
    assert plan.hosts["isp-a.gw"].forwarding and not plan.hosts["isp-a"].forwarding
    assert str(plan.vantages["isp-a"].resolver) == "10.1.0.1"
    assert str(plan.vantages["control"].resolver) == "198.18.0.2"
    assert plan.hosts["isp-b"].resolv_conf == "nameserver 10.2.0.1\n"
    assert len(plan.links) == 5
    # Safety: no host has a default route; every route stays inside the lab's ranges.
    for host in plan.hosts.values():
        for r in host.routes:
            assert r.dst.prefixlen > 0
            assert str(r.dst).startswith(("198.18.", "10."))


def test_root_zone_and_rpz() -> None:
    plan = demo_plan()
    # The root delegates test. to its TLD server, which delegates each zone to the authority.
    root = plan.files["inet/dns/root/root.zone"]
    assert "test. IN NS ns.nic.test." in root and "ns.nic.test. IN A 198.18.0.3" in root
    assert "news.test. IN A" not in root
    assert "blog.test. IN NS ns1.blog.test." in plan.files["inet/dns/tld/test.zone"]
    assert "news.test. IN A 198.18.1.1" in plan.files["inet/dns/auth/news.test.zone"]
    assert "www.blog.test. IN A 198.18.0.50" in plan.files["inet/dns/auth/blog.test.zone"]
    rpz = plan.files["isp-a/rpz.zone"]
    assert "news.test CNAME ." in rpz and "*.news.test CNAME ." in rpz
    assert "social.test A 10.10.34.34" in rpz
    conf = plan.files["isp-a/unbound.conf"]
    assert 'local-zone: "test." nodefault' in conf
    assert 'name: "chat.test."\n  stub-addr: 127.0.0.1' in conf
    assert "interface: 10.1.0.1" in conf


def test_firewall_ruleset() -> None:
    fw = demo_plan().files["isp-a/firewall.nft"]
    assert 'iifname "down0" ip daddr 198.18.1.3 counter drop' in fw
    assert "ip daddr 198.18.0.50 th dport 443 meta l4proto tcp counter reject with tcp reset" in fw
    assert "priority -10" in fw


def test_no_firewall_file_for_an_isp_without_rules() -> None:
    assert "isp-b/firewall.nft" not in demo_plan().files


def test_shadowed_resolver_rules_are_left_out() -> None:
    s = parse_scenario("""version: 1
name: t
internet: {sites: [{name: a.test}, {name: www.a.test}]}
isps:
  - name: x
    resolver:
      rules:
        - {match: {domain: a.test}, action: nxdomain}
        - {match: {exact: www.a.test}, action: {answer: 10.0.0.9}}
""")
    rules = effective_resolver_rules(s.isps[0])
    assert [r.action for r in rules] == ["nxdomain"]


def test_every_site_has_a_certificate() -> None:
    plan = demo_plan()
    for site in plan.scenario.sites:
        assert b"BEGIN CERTIFICATE" in plan.files[f"pki/{site.name}.pem"]
    assert b"BEGIN CERTIFICATE" in plan.files["pki/ca.pem"]
