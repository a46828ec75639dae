"""DPI placement (access, border) and the close action: loader, compiler, middlebox answers, oracle
and explain, without a lab (tests/lab/test_border_lab.py runs them for real)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import dns.flags
import dns.message
import pytest

from harness.analysis import analyse
from harness.explain import explain
from netlab.addressing import ROOT_DNS, isp_addresses
from netlab.capabilities import Capabilities
from netlab.compile import compile_lab
from netlab.compile.dpi import OUT_CHAIN, compile_dpi
from netlab.errors import ScenarioError
from netlab.loader import load_scenario, parse_scenario
from netlab.model import Isp, Match, Rule
from netlab.oracle import expected_verdicts
from netlab.services._parsers import build_udp, parse_ipv4
from netlab.services.dpi import ACCEPT, Engine, forged_dns_answer

ROOT = Path(__file__).resolve().parents[2]
BORDER = ROOT / "scenarios" / "border.yaml"
TLS_ONLY = Capabilities(stages=("dns", "tcp", "tls"))


def scenario(placement: str, rules: str, sites: str = "") -> str:
    return f"""version: 1
name: t
internet:
  sites:
    - name: video.test
    - name: ok.test
{sites}isps:
  - name: isp
    dpi:
      placement: {placement}
      rules:
{rules}"""


INJECT = "        - {match: {dns_query: video.test}, action: {inject: 10.10.34.35}}\n"


def verdicts(text: str, caps: Capabilities | None = None) -> dict[str, str]:
    s = parse_scenario(text, source="s.yaml")
    plan = compile_lab(s)
    exp = expected_verdicts(s, plan.site_addresses, *([caps] if caps else []))
    return {url: e.verdict.value for (vantage, url), e in exp.items() if vantage == "isp"}


def test_placement_loads_and_defaults_to_access() -> None:
    assert parse_scenario(scenario("border", INJECT), source="s.yaml").isps[0].dpi_placement == "border"
    assert parse_scenario(scenario("access", INJECT), source="s.yaml").isps[0].dpi_placement == "access"
    plain = scenario("access", INJECT).replace("      placement: access\n", "")
    assert parse_scenario(plain, source="s.yaml").isps[0].dpi_placement == "access"
    s = load_scenario(BORDER)
    assert [i.dpi_placement for i in s.isps] == ["access", "border"]


@pytest.mark.parametrize(("text", "key", "words"), [
    (scenario("edge", INJECT), "isps[0].dpi.placement", "expected one of: access, border"),
    (scenario("border", "        - {match: {dns_query: video.test}, action: drop}\n"),
     "isps[0].dpi.rules[0].action", "Use {inject: IP}, or placement: access"),
    (scenario("access", "        - {match: {dns_query: video.test}, action: close}\n"),
     "isps[0].dpi.rules[0].action", "inject a forged answer"),
])
def test_bad_placement_input_names_line_and_key(text: str, key: str, words: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="s.yaml")
    assert f": {key}: " in str(info.value) and words in str(info.value)
    assert str(info.value).startswith("s.yaml:")


def test_close_is_a_dpi_action() -> None:
    text = scenario("access", "        - {match: {sni: ok.test}, action: close}\n"
                              "        - {match: {http_host: ok.test}, action: close}\n")
    assert verdicts(text) == {"https://video.test/": "ok", "http://video.test/": "ok",
                              "https://ok.test/": "tls.eof", "http://ok.test/": "http.eof"}


def test_border_compiles_an_output_chain_and_starts_the_middlebox_first() -> None:
    rules = (Rule(Match(dns_query="video.test"), "inject", address=IPv4Address("10.10.34.35")),
             Rule(Match(sni="social.test"), "reset"))
    access = compile_dpi(Isp("a", dpi_rules=rules), isp_addresses(1), {})
    border = compile_dpi(Isp("b", dpi_rules=rules, dpi_placement="border"), isp_addresses(2), {})
    assert OUT_CHAIN not in access.files["a/dpi.rules"] and "OUTPUT" not in access.files["a/dpi.rules"]
    text = border.files["b/dpi.rules"]
    assert f"-I OUTPUT 1 -o up0 -j {OUT_CHAIN}" in text
    udp = [line for line in text.splitlines() if line.startswith(f"-A {OUT_CHAIN} -p udp ")]
    assert len(udp) == 1 and "53" in udp[0] and "NFQUEUE" in udp[0] and f"-A {OUT_CHAIN} -p tcp " in text
    assert f"-A {OUT_CHAIN} -m connmark --mark 0x40000000/0x40000000 -j DROP" in text
    assert "-I INPUT 1 -i up0 -m connmark --mark 0x40000000/0x40000000 -j DROP" in text
    assert "-A NETLAB-DPI -i down0 -o up0 -p udp " in text  # the clients' traffic as before
    assert json.loads(border.files["b/dpi.json"])["placement"] == "border"
    assert any("placement border" in n for n in border.notes)
    plan = compile_lab(load_scenario(BORDER))
    assert [s.name for s in plan.hosts["border.gw"].services] == ["dpi", "resolver"]
    assert [s.name for s in plan.hosts["access.gw"].services] == ["resolver", "dpi"]


def test_forged_answer_to_a_resolver_is_authoritative() -> None:
    stub = dns.message.make_query("video.test", "A")  # RD set, as a stub resolver sends it
    iterative = dns.message.make_query("video.test", "A")
    iterative.flags &= ~dns.flags.RD  # as a recursive resolver asks an authority
    for q, flag, other in ((stub, dns.flags.RA, dns.flags.AA), (iterative, dns.flags.AA, dns.flags.RA)):
        r = dns.message.from_wire(forged_dns_answer(q.to_wire(), "10.10.34.35"))
        assert r.flags & flag and not r.flags & other and r.id == q.id
        assert [rd.address for rr in r.answer for rd in rr] == ["10.10.34.35"]


def test_middlebox_answers_the_routers_own_query() -> None:
    isp = Isp("b", dpi_rules=(Rule(Match(dns_query="video.test"), "inject", address=IPv4Address("10.10.34.35")),),
              dpi_placement="border")
    from netlab.compile.dpi import dpi_config
    engine = Engine(dpi_config(isp, isp_addresses(2), {}))
    q = dns.message.make_query("www.video.test", "A")
    q.flags &= ~dns.flags.RD
    router = str(isp_addresses(2).router_up.ip)
    d = engine.process(build_udp(router, str(ROOT_DNS), 33000, 53, q.to_wire()))
    assert d.verdict == ACCEPT and len(d.send) == 1  # the query goes on after the forged answer
    forged = parse_ipv4(d.send[0])
    assert (forged.src, forged.sport, forged.dst, forged.dport) == (str(ROOT_DNS), 53, router, 33000)
    assert dns.message.from_wire(forged.payload).flags & dns.flags.AA


def test_oracle_border_poisons_the_system_resolver() -> None:
    access, border = verdicts(scenario("access", INJECT)), verdicts(scenario("border", INJECT))
    # the web probe meets the injector on its own query to the public resolver either way
    assert access["https://video.test/"] == border["https://video.test/"] == "dns.injected"
    # a probe that asks only the system resolver sees the poisoned cache at the border only
    assert verdicts(scenario("access", INJECT), TLS_ONLY)["https://video.test/"] == "ok"
    assert verdicts(scenario("border", INJECT), TLS_ONLY)["https://video.test/"] == "dns.bogon"
    lab_addr = INJECT.replace("10.10.34.35", "198.18.9.9")
    assert verdicts(scenario("border", lab_addr), TLS_ONLY)["https://video.test/"] == "dns.mismatch"
    # a rule narrowed to the public resolver never sees the ISP resolver's recursion
    narrowed = "        - {match: {dns_query: video.test, ip: 198.18.0.2}, action: {inject: 10.10.34.35}}\n"
    assert verdicts(scenario("border", narrowed), TLS_ONLY)["https://video.test/"] == "ok"
    assert verdicts(scenario("border", narrowed))["https://video.test/"] == "dns.injected"
    assert verdicts(scenario("border", INJECT), TLS_ONLY)["https://ok.test/"] == "ok"


def test_oracle_border_follows_the_cname_chain() -> None:
    alias = "    - name: www.ok.test\n      records: {CNAME: video.test}\n"
    text = scenario("border", INJECT, sites=alias).replace("isps:", "targets: [https://www.ok.test/]\nisps:")
    assert verdicts(text, TLS_ONLY) == {"https://www.ok.test/": "dns.bogon"}
    assert verdicts(text.replace("placement: border", "placement: access"), TLS_ONLY) == {
        "https://www.ok.test/": "ok"}


def test_explain_names_the_border_and_uses_the_rule() -> None:
    ex = explain(load_scenario(BORDER))
    reasons = {(r["vantage"], r["url"]): r["reason"] for r in ex.expected}
    assert "the ISP resolver caches the forged answer" in reasons[("border", "https://video.test/")]
    assert "border" not in reasons[("access", "https://video.test/")]
    assert not ex.idle_rules, ex.idle_rules
    (border,) = [i for i in ex.isps if i.name == "border"]
    assert OUT_CHAIN in border.dpi_iptables


def test_analysis_says_the_system_resolver_was_poisoned() -> None:
    def q(engine: str, tid: int, addr: str) -> dict:
        return {"engine": engine, "transaction_id": tid, "failure": None, "tags": ["depth=0"],
                "answers": [{"answer_type": "A", "ipv4": addr}]}
    control = {"queries": [q("system", 1, "198.18.1.1"), q("udp", 2, "198.18.1.1")],
               "x_resolved": {"system": ["198.18.1.1"], "public": ["198.18.1.1"]}}
    border = {"queries": [q("system", 1, "10.10.34.35"), q("udp", 2, "10.10.34.35"), q("udp", 2, "198.18.1.1")],
              "x_resolved": {"system": ["10.10.34.35"], "public": ["10.10.34.35"]}, "x_failed_stage": "dns"}
    access = {**border, "queries": [q("system", 1, "198.18.1.1"), *border["queries"][1:]],
              "x_resolved": {"system": ["198.18.1.1"], "public": ["10.10.34.35"]}}
    b, a = analyse(border, control), analyse(access, control)
    assert b.verdict.value == a.verdict.value == "dns.injected"
    assert "system resolver answered the forged address too" in b.why
    assert "system resolver" not in a.why
