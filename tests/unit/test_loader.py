"""Loader: valid scenarios load; every bad input is an error naming file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab.errors import ScenarioError
from netlab.loader import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
BASE = """version: 1
name: t
internet:
  sites:
    - name: a.test
    - name: b.test
"""


def err(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="s.yaml")
    return info.value


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenarios_load(path: Path) -> None:
    s = load_scenario(path)
    assert s.targets and s.sites


def test_demo_matches_the_normative_example() -> None:
    s = load_scenario(ROOT / "scenarios/demo.yaml")
    assert [i.name for i in s.isps] == ["isp-a", "isp-b"]
    assert s.site("www.blog.test").address.exploded == "198.18.0.50"
    a = s.isp("isp-a")
    assert [(r.action, str(r.address) if r.address else None) for r in a.resolver_rules] == [
        ("nxdomain", None), ("answer", "10.10.34.34"), ("servfail", None)]
    assert s.isp("isp-b").shaping[0].rate_bps == 256_000
    assert s.expect == {"isp-a": {"https://news.test/": "dns.nxdomain"},
                        "isp-b": {"http://news.test/": "http.blockpage"}}


def test_default_targets_are_https_and_http_of_every_site() -> None:
    s = parse_scenario(BASE)
    assert [t.url for t in s.targets] == ["https://a.test/", "http://a.test/", "https://b.test/", "http://b.test/"]


def test_isp_without_rules_is_valid() -> None:
    s = parse_scenario(BASE + "isps:\n  - name: free\n")
    assert s.isps[0].resolver_rules == () and s.vantages == ["free", "control"]


def test_malformed_yaml_names_the_line() -> None:
    e = err(BASE + "isps: [\n  - name: x\n")
    assert e.file == "s.yaml" and e.line is not None and "malformed YAML" in str(e)


def test_unknown_key() -> None:
    e = err(BASE + "isps:\n  - name: x\n    resolvr: {}\n")
    assert (e.line, e.key) == (9, "isps[0].resolvr") and "unknown key" in str(e)
    assert str(e).startswith("s.yaml:9: isps[0].resolvr:")


def test_unknown_top_level_key() -> None:
    e = err(BASE + "extra: 1\n")
    assert e.key == "extra" and e.line == 7


@pytest.mark.parametrize(("snippet", "key", "words"), [
    ("    firewall:\n      rules:\n        - match: {ip: 198.18.1.300}\n          action: drop\n",
     "isps[0].firewall.rules[0].match.ip", "not an IPv4 address"),
    ("    firewall:\n      rules:\n        - match: {cidr: 10.0.0.0/33}\n          action: drop\n",
     "isps[0].firewall.rules[0].match.cidr", "not an IPv4 CIDR"),
    ("    firewall:\n      rules:\n        - match: {site: nope.test}\n          action: drop\n",
     "isps[0].firewall.rules[0].match.site", "no site named"),
    ("    resolver:\n      rules:\n        - match: {domain: bad_name!.test}\n          action: nxdomain\n",
     "isps[0].resolver.rules[0].match.domain", "not a valid DNS name"),
    ("    resolver:\n      rules:\n        - match: {domain: a.test}\n          action: explode\n",
     "isps[0].resolver.rules[0].action", "unknown resolver action"),
    ("    resolver:\n      rules:\n        - match: {domain: a.test}\n          action: {answer: 8.8.8.8}\n",
     "isps[0].resolver.rules[0].action.answer", "public address"),
    ("    firewall:\n      rules:\n        - match: {port: 99999}\n          action: drop\n",
     "isps[0].firewall.rules[0].match.port", "not a port"),
    ("    firewall:\n      rules:\n        - match: {port: '443'}\n          action: drop\n",
     "isps[0].firewall.rules[0].match.port", "expected a port number"),
    ("    firewall:\n      rules:\n        - match: {}\n          action: drop\n",
     "isps[0].firewall.rules[0].match", "empty match"),
    ("    dpi:\n      rules:\n        - match: {site: a.test}\n          action: reset\n",
     "isps[0].dpi.rules[0].match", "needs sni"),
    ("    dpi:\n      rules:\n        - match: {sni: a.test}\n          action: {inject: 10.1.1.1}\n",
     "isps[0].dpi.rules[0].action", "needs match.dns_query"),
    ("    shaping:\n      - match: {site: a.test}\n        rate: fast\n",
     "isps[0].shaping[0].rate", "not a rate"),
])
def test_bad_rules(snippet: str, key: str, words: str) -> None:
    e = err(BASE + "isps:\n  - name: x\n" + snippet)
    assert e.key == key, str(e)
    assert words in str(e)
    assert e.line is not None and e.line >= 9


def test_duplicate_site_names() -> None:
    e = err(BASE + "    - name: A.test\n")
    assert e.key == "internet.sites[2].name" and "duplicate site" in str(e) and e.line == 7


def test_duplicate_isp_names() -> None:
    e = err(BASE + "isps:\n  - name: x\n  - name: x\n")
    assert e.key == "isps[1].name" and "duplicate ISP" in str(e)


def test_reserved_and_invalid_isp_names() -> None:
    assert "reserved" in str(err(BASE + "isps:\n  - name: control\n"))
    assert err(BASE + "isps:\n  - name: Big ISP\n").key == "isps[0].name"


def test_site_address_outside_the_lab_internet() -> None:
    e = err(BASE.replace("    - name: b.test\n", "    - name: b.test\n      address: 1.2.3.4\n"))
    assert e.key == "internet.sites[1].address" and "outside the lab internet" in str(e)


def test_shared_site_address() -> None:
    """Shared hosting: two sites on one address load (tests/unit/test_shared_hosting.py has more)."""
    text = BASE.replace("    - name: a.test\n", "    - name: a.test\n      address: 198.18.5.5\n")
    text = text.replace("    - name: b.test\n", "    - name: b.test\n      address: 198.18.5.5\n")
    s = parse_scenario(text)
    assert s.site("a.test").addresses == s.site("b.test").addresses


def test_target_outside_the_lab() -> None:
    e = err(BASE + "targets:\n  - https://example.org/\n")
    assert e.key == "targets[0]" and "not a site of this scenario" in str(e)


def test_target_bad_scheme() -> None:
    assert "scheme" in str(err(BASE + "targets:\n  - ftp://a.test/\n"))


def test_wrong_types() -> None:
    assert "expected a list" in str(err("version: 1\nname: t\ninternet:\n  sites: a.test\n"))
    assert "expected an integer" in str(err(BASE.replace("version: 1", "version: one")))
    assert "unsupported version" in str(err(BASE.replace("version: 1", "version: 2")))


def test_expect_unknown_verdict_and_vantage() -> None:
    assert "unknown verdict" in str(err(BASE + "expect:\n  control:\n    https://a.test/: blocked\n"))
    assert err(BASE + "expect:\n  nobody:\n    https://a.test/: ok\n").key == "expect.nobody"


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "none.yaml")
    (tmp_path / "e.yaml").write_text("")
    with pytest.raises(ScenarioError, match="empty"):
        load_scenario(tmp_path / "e.yaml")


def test_idna_names_are_normalised() -> None:
    s = parse_scenario(BASE + "    - name: пример.test\n")
    assert s.sites[-1].name == "xn--e1afmkfd.test" and s.sites[-1].display_name == "пример.test"


def test_servfail_with_exact_is_refused_with_a_reason() -> None:
    e = err(BASE + "isps:\n  - name: x\n    resolver:\n      rules:\n        - match: {exact: a.test}\n"
            "          action: servfail\n")
    assert "use match.domain" in str(e)
