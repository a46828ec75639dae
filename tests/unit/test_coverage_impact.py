"""Partial enforcement (coverage) is deterministic per seed; collateral damage and effectiveness."""

from __future__ import annotations

from pathlib import Path

from netlab.addressing import allocate_sites
from netlab.impact import impact
from netlab.loader import load_scenario, parse_scenario
from netlab.oracle import expected_verdicts

ROOT = Path(__file__).resolve().parents[2]


def scenario(seed: int, coverage: float = 0.3) -> str:
    sites = "\n".join(f"    - {{name: s{i:02d}.svc.test, service: svc}}" for i in range(40))
    return f"""version: 1
name: cov
seed: {seed}
internet:
  sites:
{sites}
    - {{name: other.test}}
isps:
  - name: x
    resolver:
      rules: [{{match: {{domain: svc.test}}, action: nxdomain, coverage: {coverage}}}]
  - name: y
    firewall:
      rules: [{{match: {{cidr: 198.18.0.0/15}}, action: drop, coverage: {coverage}, intent: svc}}]
"""


def hit(text: str, isp: str) -> set[str]:
    s = parse_scenario(text)
    rules = s.isp(isp).resolver_rules + s.isp(isp).firewall_rules
    return {str(r.match.exact or r.match.ip) for r in rules}


def test_same_seed_same_subset_different_seed_different_subset() -> None:
    a, b = hit(scenario(1), "x"), hit(scenario(1), "x")
    assert a == b and 0 < len(a) < 40
    assert hit(scenario(2), "x") != a
    assert hit(scenario(1), "y") == hit(scenario(1), "y") != hit(scenario(3), "y")


def test_coverage_is_roughly_the_fraction_and_one_means_all() -> None:
    assert 6 <= len(hit(scenario(7, 0.3), "x")) <= 20
    assert len(hit(scenario(7, 1.0), "x")) == 1  # the rule itself, unexpanded: domain svc.test
    expanded = parse_scenario(scenario(7, 0.3)).isp("x").resolver_rules
    assert all(r.covered_from.startswith("line ") and r.coverage is None for r in expanded)


def test_telegram_collateral_and_effectiveness_from_the_oracle() -> None:
    s = load_scenario(ROOT / "scenarios/telegram-2018.yaml")
    sites = allocate_sites({x.name: x.address for x in s.sites})
    exp = expected_verdicts(s, sites)
    imp = impact(s, sites, {k: e.verdict for k, e in exp.items()}, {k: e.rule for k, e in exp.items()})
    assert imp["names"].collateral == [] and imp["names"].effectiveness == {"telegram": 1.0, "vpn": 1.0}
    assert sorted(imp["ranges"].collateral) == sorted(
        f"https://{n}/" for n in ("vpn-one.test", "proxy-two.test", "shop.test", "bank.test", "game.test",
                                  "school.test", "mail.test", "maps.test", "video.test"))
    assert imp["ranges"].effectiveness["telegram"] == 1.0
    assert 0 < imp["partial"].effectiveness["telegram"] < 1 and imp["partial"].collateral == []
    assert 0 < imp["lax"].effectiveness["telegram"] <= 0.34


def test_rules_that_name_no_site_are_collateral_unless_they_state_an_intent() -> None:
    s = load_scenario(ROOT / "scenarios/firewall.yaml")
    sites = allocate_sites({x.name: x.address for x in s.sites})
    exp = expected_verdicts(s, sites)
    imp = impact(s, sites, {k: e.verdict for k, e in exp.items()}, {k: e.rule for k, e in exp.items()})
    assert sorted(imp["fwisp"].collateral) == ["http://range2.test/", "https://range1.test/"]


PINNED_COLLATERAL = """version: 1
name: pins
internet:
  sites:
    - {name: chat.test, service: chat, address: 198.18.7.1}
    - {name: shop.test, address: 198.18.7.2}
isps:
  - name: x
    firewall:
      rules: [{match: {cidr: 198.18.7.0/24}, action: drop, intent: chat}]
targets: [https://chat.test/, https://shop.test/]
expect:
  x: {https://shop.test/: tcp.timeout}
"""


def test_a_pin_on_a_collaterally_blocked_target_keeps_the_collateral() -> None:
    # shop.test is blocked by a range rule meant for chat: collateral, pinned or not.
    for text in (PINNED_COLLATERAL, PINNED_COLLATERAL.replace("tcp.timeout}", "tcp.reset}")):
        s = parse_scenario(text)
        sites = allocate_sites({x.name: x.address for x in s.sites})
        exp = expected_verdicts(s, sites)
        shop = exp[("x", "https://shop.test/")]
        assert shop.pinned and shop.rule is not None and shop.rule.match.cidr is not None
        imp = impact(s, sites, {k: e.verdict for k, e in exp.items()}, {k: e.rule for k, e in exp.items()})
        assert imp["x"].collateral == ["https://shop.test/"]
        assert imp["x"].effectiveness == {"chat": 1.0}
