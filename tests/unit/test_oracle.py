"""Oracle: the verdicts written beside scenario.md's example, and first-match-wins."""

from __future__ import annotations

from pathlib import Path

from netlab.addressing import allocate_sites
from netlab.loader import load_scenario, parse_scenario
from netlab.oracle import expected_verdicts

ROOT = Path(__file__).resolve().parents[2]


def verdicts(s):  # type: ignore[no-untyped-def]
    sites = allocate_sites({x.name: x.address for x in s.sites})
    return {k: v.verdict.value for k, v in expected_verdicts(s, sites).items()}


def test_demo_verdicts_are_those_of_the_design() -> None:
    v = verdicts(load_scenario(ROOT / "scenarios/demo.yaml"))
    assert v[("isp-a", "https://news.test/")] == "dns.nxdomain"
    assert v[("isp-a", "http://news.test/")] == "dns.nxdomain"
    assert v[("isp-a", "https://social.test/")] == "dns.bogon"
    assert v[("isp-a", "https://chat.test/")] == "dns.servfail"
    assert v[("isp-a", "https://video.test/")] == "tcp.timeout"
    assert v[("isp-a", "https://www.blog.test/")] == "tcp.reset"
    assert v[("isp-a", "https://ok.test/")] == "ok"
    assert v[("isp-b", "https://social.test/")] == "tls.reset"
    assert v[("isp-b", "http://news.test/")] == "http.blockpage"
    assert v[("isp-b", "https://news.test/")] == "ok"
    assert v[("isp-b", "https://video.test/")] == "dns.injected"
    assert v[("isp-b", "https://chat.test/")] == "tls.timeout"
    assert v[("isp-b", "https://ok.test/")] == "throttled"
    assert all(val == "ok" for (vantage, _), val in v.items() if vantage == "control")


def test_first_matching_rule_wins_and_resolver_comes_before_firewall() -> None:
    s = parse_scenario("""version: 1
name: t
internet: {sites: [{name: a.test}, {name: b.test}]}
isps:
  - name: x
    resolver:
      rules: [{match: {domain: a.test}, action: refused}]
    firewall:
      rules:
        - {match: {site: a.test}, action: drop}
        - {match: {site: b.test, port: 443}, action: reject}
        - {match: {site: b.test}, action: drop}
""")
    v = verdicts(s)
    assert v[("x", "https://a.test/")] == "dns.refused"
    assert v[("x", "https://b.test/")] == "tcp.unreachable"
    assert v[("x", "http://b.test/")] == "tcp.timeout"


def test_answer_with_the_sites_own_address_changes_nothing() -> None:
    s = parse_scenario("""version: 1
name: t
internet: {sites: [{name: a.test, address: 198.18.9.9}]}
isps:
  - name: x
    resolver:
      rules: [{match: {domain: a.test}, action: {answer: 198.18.9.9}}]
""")
    assert verdicts(s)[("x", "https://a.test/")] == "ok"


def test_expect_pins_override_the_oracle() -> None:
    s = parse_scenario("""version: 1
name: t
internet: {sites: [{name: a.test}]}
isps: [{name: x}]
expect:
  x: {"https://a.test/": site_down}
""")
    assert verdicts(s)[("x", "https://a.test/")] == "site_down"


def test_a_pin_replaces_the_verdict_only() -> None:
    s = parse_scenario("""version: 1
name: t
internet: {sites: [{name: a.test, address: 198.18.7.1}, {name: b.test, address: 198.18.7.2}]}
isps:
  - name: x
    firewall: {rules: [{match: {cidr: 198.18.7.0/24}, action: drop}]}
targets: [https://a.test/, https://b.test/]
expect:
  x: {https://a.test/: tcp.timeout, https://b.test/: ok}
  control: {https://a.test/: ok}
""")
    sites = allocate_sites({x.name: x.address for x in s.sites})
    exp = expected_verdicts(s, sites)
    agree, contra, ctrl = exp[("x", "https://a.test/")], exp[("x", "https://b.test/")], exp[("control", "https://a.test/")]
    assert agree.pinned and agree.verdict.value == "tcp.timeout" and not agree.contradicts_rules
    assert agree.rule is not None and agree.rule.action == "drop" and agree.derived is not None
    assert agree.reason.startswith("pinned by the scenario's expect") and "firewall rule line 6" in agree.reason
    # A pin that contradicts the rules: the pinned verdict is scored, the rules' one is shown beside it.
    assert contra.pinned and contra.verdict.value == "ok" and contra.contradicts_rules
    assert contra.derived is not None and contra.derived.verdict.value == "tcp.timeout"
    assert contra.rule == agree.rule and "the rules give tcp.timeout" in contra.reason
    assert ctrl.pinned and not ctrl.contradicts_rules and ctrl.rule is None


def test_delay_and_loss_are_not_modelled_and_the_reason_says_so() -> None:
    """A delay or a loss changes what TCP does in ways the oracle cannot tell (docs/scenario.md): it
    expects what the rule's rate gives, and its reason tells the user to pin the verdict."""
    s_text = """version: 1
name: t
internet: {sites: [{name: a.test}, {name: b.test}, {name: c.test}, {name: d.test}, {name: e.test}, {name: f.test}]}
isps:
  - name: x
    shaping:
      - {match: {site: a.test}, delay: 300ms}
      - {match: {site: b.test}, loss: 50%, rate: 8kbit}
      - {match: {site: d.test}, delay: 3s}
      - {match: {site: c.test}, delay: 2s}
      - {match: {site: e.test}, loss: 100%}
      - {match: {sni: f.test}, loss: 100%}
"""
    s = parse_scenario(s_text, source="t.yaml")
    sites = allocate_sites({x.name: x.address for x in s.sites})
    got = expected_verdicts(s, sites)
    delayed = got[("x", "https://a.test/")]
    assert delayed.verdict.value == "ok" and "does not model" in delayed.reason and "expect" in delayed.reason
    assert got[("x", "https://b.test/")].verdict.value == "http.timeout"  # its rate decides (64 KiB at 8 kbit/s)
    # At about the connect timeout (2 s), the answer races the timer: not modelled either.
    assert got[("x", "https://c.test/")].verdict.value == "ok" and "does not model" in got[("x", "https://c.test/")].reason
    # No handshake survives a total loss, or a delay well past the connect timeout, on addresses.
    for site in ("d.test", "e.test"):
        for url in (f"https://{site}/", f"http://{site}/"):
            assert got[("x", url)].verdict.value == "tcp.timeout", url
            assert got[("x", url)].rule is not None and got[("x", url)].rule.action == "shape"
    # A rule on names shapes what follows the name: the handshake passes, and the rest is not modelled.
    assert got[("x", "https://f.test/")].verdict.value == "ok"
    # A longer connect timeout than the delay: the handshake gets through.
    longer = parse_scenario(s_text.replace("isps:", "probe: {connect_timeout: 3}\nisps:"), source="t.yaml")
    assert expected_verdicts(longer, sites)[("x", "https://d.test/")].verdict.value == "ok"
