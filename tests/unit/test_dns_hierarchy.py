"""The lab's DNS hierarchy (issue 15 item 1): `records:` in the loader, the zones the compiler
writes (root -> TLD -> zone, with glue), CNAME chains in the oracle and in the probe's answers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest
from cryptography import x509

from netlab.compile import compile_lab
from netlab.compile.dns import _txt, deciding_resolver_rule, dns_hierarchy
from netlab.errors import ScenarioError
from netlab.loader import load_scenario, parse_scenario
from netlab.oracle import expected_verdicts
from netlab.services.whoami import answer
from probes.dns import _Response

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "dns-hierarchy.yaml"


def sites_yaml(sites: str, isps: str = "") -> str:
    return f"version: 1\nname: t\ninternet:\n  sites:\n{sites}{isps}"


def load_error(text: str) -> str:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, source="s.yaml")
    return str(err.value)


@pytest.mark.parametrize(("sites", "where", "what"), [
    ("    - {name: a.test}\n    - {name: www.a.test, records: {CNAME: www.b.test}}\n"
     "    - {name: www.b.test, records: {CNAME: www.a.test}}\n",
     "s.yaml:6: internet.sites[1].records.CNAME", "a CNAME loop: www.a.test -> www.b.test -> www.a.test"),
    ("    - {name: www.a.test, records: {CNAME: www.a.test}}\n",
     "s.yaml:5: internet.sites[0].records.CNAME", "a CNAME loop"),
    ("    - {name: a.test, records: {SRV: x}}\n", "s.yaml:5: internet.sites[0].records.SRV",
     "unknown key; expected one of: AAAA, CNAME, TXT, NS, MX"),
    ("    - {name: a.test, records: {AAAA: '2001:db8::1'}}\n", "s.yaml:5: internet.sites[0].records.AAAA",
     "2001:db8::1 is outside the lab's IPv6 range 2001:2::/48"),
    ("    - {name: a.test, records: {AAAA: 198.18.1.1}}\n", "s.yaml:5: internet.sites[0].records.AAAA",
     "is not an IPv6 address"),
    ("    - {name: www.a.test, records: {CNAME: nowhere.test}}\n", "s.yaml:5: internet.sites[0].records.CNAME",
     "'nowhere.test' is not a site of this scenario"),
    ("    - {name: a.test}\n    - {name: www.a.test, address: 198.18.1.9, records: {CNAME: a.test}}\n",
     "s.yaml:6: internet.sites[1].address", "a site with a CNAME is an alias of a.test"),
    ("    - {name: a.test}\n    - {name: www.a.test, records: {CNAME: a.test, TXT: x}}\n",
     "s.yaml:6: internet.sites[1].records.TXT", "no other records (RFC 1034)"),
    ("    - {name: a.test}\n    - {name: b.test, records: {CNAME: a.test}}\n",
     "s.yaml:6: internet.sites[1].records.CNAME", "b.test is a zone apex"),
    ("    - {name: a.test}\n    - {name: www.a.test, records: {CNAME: [a.test, a.test]}}\n",
     "s.yaml:6: internet.sites[1].records.CNAME", "a name has one CNAME"),
    ("    - {name: a.test, records: {NS: b.test}}\n    - {name: b.test}\n",
     "s.yaml:5: internet.sites[0].records.NS", "b.test is a site"),
    ("    - {name: a.test, records: {MX: '10 20 mx.a.test'}}\n", "s.yaml:5: internet.sites[0].records.MX",
     "is not a mail exchanger"),
    ("    - {name: a.test, records: {TXT: []}}\n", "s.yaml:5: internet.sites[0].records.TXT", "an empty list"),
    (f"    - {{name: a.test, records: {{TXT: {'x' * 256}}}}}\n", "s.yaml:5: internet.sites[0].records.TXT",
     "256 bytes; a TXT string has at most 255"),
    ("    - {name: a.test, state: unresolvable, records: {TXT: x}}\n", "s.yaml:5: internet.sites[0].records",
     "an unresolvable site is in no zone"),
    ("    - {name: www.nic.test}\n", "s.yaml:5: internet.sites[0].name", "nic.test holds the name server"),
    ("    - {name: ns1.a.test}\n", "s.yaml:5: internet.sites[0].name", "the name server of the zone a.test"),
    ("    - {name: x.lab-root}\n", "s.yaml:5: internet.sites[0].name", "the TLD lab-root is the lab's own"),
])
def test_bad_records_are_file_line_key_errors(sites: str, where: str, what: str) -> None:
    message = load_error(sites_yaml(sites))
    assert message.startswith(where), message
    assert what in message


def test_records_load_as_values_or_lists() -> None:
    s = load_scenario(SCENARIO)
    news = s.site("news.test")
    assert news is not None
    assert [str(a) for a in news.records.aaaa] == ["2001:2::10"]
    assert news.records.txt == ("v=spf1 -all", "site=news.test")
    assert news.records.mx == ((10, "mail.news.test"),)
    assert s.cname_chain("www.shop.test") == ("www.shop.test", "shop.cdn.test", "edge.cdn.test")
    assert s.canonical_site("www.shop.test") == s.site("edge.cdn.test")
    addrs = s.site_addresses()
    assert addrs["www.shop.test"] == addrs["shop.cdn.test"] == addrs["edge.cdn.test"]
    assert addrs["mirror.blog.test"] == addrs["news.test"]


def test_the_root_delegates_to_tlds_which_delegate_to_zones_with_glue() -> None:
    s = load_scenario(SCENARIO)
    root, tld, auth = dns_hierarchy(s, s.site_addresses())
    assert (str(root.address), str(tld.address), str(auth.address)) == ("198.18.0.1", "198.18.0.3", "198.18.0.4")
    assert "test. IN NS ns.nic.test.\nns.nic.test. IN A 198.18.0.3" in root.zones["."]
    assert "news.test" not in root.zones["."]  # the root answers only with the referral
    test = tld.zones["test"]
    assert "news.test. IN NS ns1.news.test.\nns1.news.test. IN A 198.18.0.4" in test  # glue
    # A zone on a DNS host: its servers are named in another zone, so the TLD gives no glue for them.
    assert "blog.test. IN NS ns1.dnshost.test.\nblog.test. IN NS ns2.dnshost.test." in test
    assert "ns2.dnshost.test. IN A" not in test
    assert "ns2.dnshost.test. IN A 198.18.0.4" in auth.zones["dnshost.test"]
    news = auth.zones["news.test"]
    for line in ("news.test. IN AAAA 2001:2::10", 'news.test. IN TXT "v=spf1 -all"',
                 "news.test. IN MX 10 mail.news.test.", "www.news.test. IN CNAME news.test."):
        assert line in news
    assert "mirror.blog.test. IN CNAME news.test." in auth.zones["blog.test"]
    assert "www.shop.test. IN CNAME shop.cdn.test." in auth.zones["shop.test"]
    assert set(auth.zones) == {"news.test", "blog.test", "dnshost.test", "cdn.test", "shop.test", "dnscheck.test"}
    # The whoami name is delegated, with glue, to the whoami server, which answers it (not NSD).
    assert ("whoami.dnscheck.test. IN NS ns1.whoami.dnscheck.test.\n"
            "ns1.whoami.dnscheck.test. IN A 198.18.0.5") in auth.zones["dnscheck.test"]


@pytest.mark.skipif(shutil.which("nsd-checkzone") is None, reason="nsd-checkzone (nsd) not installed")
def test_nsd_accepts_every_zone(tmp_path: Path) -> None:
    s = load_scenario(SCENARIO)
    for tier in dns_hierarchy(s, s.site_addresses()):
        for apex, text in tier.zones.items():
            path = tmp_path / f"{tier.name}-{apex}.zone"
            path.write_text(text)
            res = subprocess.run(["nsd-checkzone", apex, str(path)], capture_output=True, text=True)
            assert res.returncode == 0, f"{apex}: {res.stdout}{res.stderr}"


def test_the_whoami_server_answers_who_asks() -> None:
    zone, ns = dns.name.from_text("whoami.dnscheck.test."), dns.name.from_text("ns1.whoami.dnscheck.test.")

    def ask(name: str, rdtype: str) -> dns.message.Message:
        wire = answer(dns.message.make_query(name, rdtype).to_wire(), "10.1.255.1", zone, ns, "198.18.0.5")
        assert wire is not None
        return dns.message.from_wire(wire)

    txt = ask("whoami.dnscheck.test", "TXT")
    assert txt.flags & dns.flags.AA and [r.to_text() for r in txt.answer[0]] == ['"10.1.255.1"']
    assert [r.to_text() for r in ask("whoami.dnscheck.test", "A").answer[0]] == ["10.1.255.1"]
    assert txt.answer[0].ttl == 0  # never cached: the next resolver gets its own address
    assert [r.to_text() for r in ask("ns1.whoami.dnscheck.test", "A").answer[0]] == ["198.18.0.5"]
    assert ask("x.whoami.dnscheck.test", "A").rcode() == dns.rcode.NXDOMAIN
    assert ask("news.test", "A").rcode() == dns.rcode.REFUSED
    assert answer(b"junk", "10.1.255.1", zone, ns, "198.18.0.5") is None


@pytest.mark.parametrize(("whoami", "what"), [
    ("test", "is a TLD"),
    ("news.test", "site news.test cannot be in it"),
    ("x.lab-root", "the TLD lab-root is the lab's own"),
])
def test_bad_whoami_names(whoami: str, what: str) -> None:
    message = load_error(f"version: 1\nname: t\ninternet:\n  whoami: {whoami}\n  sites: [{{name: news.test}}]\n")
    assert message.startswith("s.yaml:4: internet.whoami: ") and what in message, message


def test_txt_strings_are_quoted_and_escaped() -> None:
    assert _txt('say "hi"') == '"say \\"hi\\""'
    assert _txt("a\\b") == '"a\\\\b"'
    assert _txt("é") == '"\\195\\169"'


def test_three_nsd_services_and_aliases_in_the_canonical_certificate() -> None:
    plan = compile_lab(load_scenario(SCENARIO), servers=[])
    services = {s.name: s for s in plan.hosts["inet"].services}
    assert [str(services[n].ready.address) for n in ("nsd", "nsd-tld", "nsd-auth")] == [  # type: ignore[union-attr]
        "198.18.0.1", "198.18.0.3", "198.18.0.4"]
    assert "ip-address: 198.18.0.3" in plan.files["inet/dns/tld/nsd.conf"]
    # The origin of edge.cdn.test answers for the names whose chain ends there.
    pem = plan.files["pki/edge.cdn.test.pem"]
    assert isinstance(pem, bytes)
    cert = x509.load_pem_x509_certificates(pem)[0]
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert {"edge.cdn.test", "shop.cdn.test", "www.shop.test"} <= set(names)
    assert "pki/www.shop.test.pem" not in plan.files
    assert "198.18.0.1" in " ".join(plan.notes) and "198.18.0.4" in " ".join(plan.notes)


def test_the_oracle_follows_cname_chains_as_unbound_does() -> None:
    s = load_scenario(SCENARIO)
    isp_a, isp_b = s.isps
    rule = deciding_resolver_rule(s, isp_a, "www.shop.test")  # the rule is on the chain's end
    assert rule is not None and rule.match.exact == "edge.cdn.test"
    rule = deciding_resolver_rule(s, isp_b, "www.shop.test")  # ... or on its middle
    assert rule is not None and rule.match.exact == "shop.cdn.test"
    # `refused` is a local zone: Unbound consults it for the name asked, not for CNAME targets.
    assert deciding_resolver_rule(s, isp_b, "mirror.blog.test") is None
    verdicts = {k: v.verdict.value for k, v in expected_verdicts(s, s.site_addresses()).items()}
    assert verdicts[("isp-a", "https://www.shop.test/")] == "dns.nxdomain"
    assert verdicts[("isp-b", "https://www.shop.test/")] == "dns.bogon"
    assert verdicts[("isp-b", "https://www.news.test/")] == "dns.refused"  # a subdomain of the refused zone
    assert verdicts[("isp-b", "https://mirror.blog.test/")] == "ok"
    # The firewall sees the address the chain ends at.
    assert verdicts[("isp-a", "https://mirror.blog.test/")] == "tcp.reset"


def test_aliases_a_chain_rule_decides_are_triggers_of_their_own() -> None:
    # Unbound answers a cached CNAME target without its RPZ: the compiler names the aliases.
    plan = compile_lab(load_scenario(SCENARIO), servers=[])
    rpz_a, rpz_b = plan.files["isp-a/rpz.zone"], plan.files["isp-b/rpz.zone"]
    assert isinstance(rpz_a, str) and isinstance(rpz_b, str)
    for owner in ("edge.cdn.test", "shop.cdn.test", "www.shop.test"):
        assert f"\n{owner} CNAME .\n" in rpz_a
    assert "\nwww.shop.test A 10.10.34.34\n" in rpz_b and "edge.cdn.test" not in rpz_b
    assert "mirror.blog.test" not in rpz_b and "mirror.blog.test" not in plan.files["isp-b/unbound.conf"]
    s = parse_scenario(sites_yaml(
        "    - {name: a.test}\n    - {name: www.b.test, records: {CNAME: a.test}}\n",
        "isps:\n  - name: x\n    resolver: {rules: [{match: {domain: a.test}, action: servfail}]}\n"))
    conf = compile_lab(s, servers=[]).files["x/unbound.conf"]
    assert 'name: "a.test."\n  stub-addr: 127.0.0.1' in conf and 'name: "www.b.test."\n  stub-addr: 127.0.0.1' in conf


def test_the_probe_follows_the_chain_and_writes_one_cname_answer_as_ooni_does() -> None:
    query = dns.message.make_query("www.shop.test", "A")
    response = dns.message.make_response(query)
    response.answer = [
        dns.rrset.from_text("www.shop.test.", 60, "IN", "CNAME", "shop.cdn.test."),
        dns.rrset.from_text("shop.cdn.test.", 60, "IN", "CNAME", "edge.cdn.test."),
        dns.rrset.from_text("edge.cdn.test.", 60, "IN", "A", "198.18.1.3"),
        dns.rrset.from_text("other.test.", 60, "IN", "A", "198.18.9.9"),  # not on the chain: not taken
    ]
    response = dns.message.from_wire(response.to_wire())  # as the probe gets it: parsed from the wire
    assert _Response.of(response).addresses == ["198.18.1.3"]
    answers = _Response.of(response).answers
    assert answers[-1] == {"answer_type": "CNAME", "hostname": "edge.cdn.test.", "ttl": 60}
    assert [a["answer_type"] for a in answers].count("CNAME") == 1
    # An NXDOMAIN for the chain's end still names the alias's CNAME.
    response.answer = response.answer[:1]
    response.set_rcode(dns.rcode.NXDOMAIN)
    response = dns.message.from_wire(response.to_wire())
    assert _Response.of(response).addresses == []
    assert _Response.of(response).answers == [{"answer_type": "CNAME", "hostname": "shop.cdn.test.", "ttl": 60}]
