"""harness explain: the oracle's table and every ISP's compiled dataplane, without a lab."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.explain import explain, unbound_policy
from netlab.compile.dns import ResolverPolicy
from netlab.loader import load_scenario

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scenarios" / "demo.yaml"


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "CI": "true", "COLUMNS": "200"})


def test_expected_table_names_the_deciding_rule() -> None:
    ex = explain(load_scenario(DEMO))
    cell = ex.cell("isp-a", "https://video.test/")
    assert cell is not None and cell["verdict"] == "tcp.timeout"
    assert cell["reason"].startswith("firewall rule line") and cell["rule"] == "{site=video.test} -> drop"
    assert ex.cell("isp-a", "https://news.test/")["pinned"] is True
    assert ex.cell("control", "https://ok.test/")["verdict"] == "ok"
    assert len(ex.expected) == len(ex.scenario.targets) * len(ex.vantages)


def test_dataplane_per_isp() -> None:
    ex = explain(load_scenario(DEMO))
    a, b = ex.isps
    assert "news.test CNAME ." in a.rpz_zone and "social.test A 10.10.34.34" in a.rpz_zone
    assert 'name: "chat.test."' in a.unbound_policy and 'name: "."' not in a.unbound_policy
    assert "reject with tcp reset" in a.nftables and "@LAB@" not in a.rpz_zone
    assert not a.dpi_iptables and a.dpi_config is None and not a.tc
    assert "NFQUEUE" in b.dpi_iptables and b.dpi_config is not None
    assert {r.action for r in b.dpi_config.rules} == {"reset", "blockpage", "inject", "drop"}
    assert any(c.startswith("tc class add dev down0") and "256000bit" in c for c in b.tc)
    assert b.notes and all(not n.startswith("isp-a:") for n in b.notes)


def test_unbound_policy_keeps_refuse_and_servfail_stubs_only() -> None:
    # explain reads the compiler's structured policy (issue 14), the text it writes into unbound.conf
    conf = ResolverPolicy(refused=("x.test",), servfail=("y.test",))
    assert unbound_policy(conf) == 'local-zone: "x.test." refuse\nstub-zone:\n  name: "y.test."\n  stub-addr: 127.0.0.1'


def test_cli_text_and_json() -> None:
    text = harness("explain", str(DEMO))
    assert text.returncode == 0, text.stderr
    assert "Expected verdicts of demo" in text.stdout and "ISP isp-b: compiled dataplane" in text.stdout
    assert "table inet netlab_fw" in text.stdout and "tc qdisc replace dev down0" in text.stdout
    data = json.loads(harness("explain", str(DEMO), "--json", "--isp", "isp-b").stdout)
    assert [i["name"] for i in data["isps"]] == ["isp-b"]
    assert {"vantage": "isp-b", "url": "https://social.test/", "verdict": "tls.reset"}.items() <= next(
        e for e in data["expected"] if e["vantage"] == "isp-b" and e["url"] == "https://social.test/").items()


def test_cli_errors_exit_2(tmp_path: Path) -> None:
    assert harness("explain", str(DEMO), "--isp", "nope").returncode == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\ninternet: {sites: [{name: a.test}]}\nbogus: 1\n")
    res = harness("explain", str(bad))
    assert res.returncode == 2 and "bad.yaml:4" in res.stdout
    assert harness("explain").returncode == 2  # argparse usage error


FINDINGS = """version: 1
name: findings
internet:
  sites:
    - name: a.test
    - name: b.test
    - name: c.test
    - name: d.test
    - name: gone.test
      state: refused
isps:
  - name: x
    resolver:
      rules:
        - {match: {domain: a.test}, action: nxdomain}
        - {match: {exact: b.test}, action: {answer: 10.9.9.9}}
    firewall:
      rules:
        - {match: {site: gone.test}, action: drop}
    dpi:
      rules:
        - {match: {sni: a.test}, action: reset}
        - {match: {sni: nothing.test}, action: reset}
        - {match: {sni: c.test}, action: reset, residual: 60}
    shaping:
      - {match: {site: d.test}, delay: 100ms}
      - {match: {site: d.test}, rate: 8kbit}
  - name: y
    dpi:
      rules:
        - {match: {sni: a.test}, action: reset}
expect:
  x: {https://c.test/: ok, https://a.test/: dns.nxdomain}
  y: {http://a.test/: http.reset}
"""


def findings(tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / "findings.yaml"
    path.write_text(FINDINGS)
    return path, {(r["isp"], r["line"]): r for r in explain(load_scenario(path)).idle_rules}


def test_pins_that_contradict_the_rules_show_both_verdicts(tmp_path: Path) -> None:
    path, _ = findings(tmp_path)
    ex = explain(load_scenario(path))
    assert ex.pin_conflicts == [
        {"vantage": "x", "url": "https://c.test/", "pinned": "ok", "derived": "tls.reset",
         "reason": "dpi rule line 24"},
        {"vantage": "y", "url": "http://a.test/", "pinned": "http.reset", "derived": "ok", "reason": "no rule applies"}]
    cell = ex.cell("x", "https://c.test/")
    assert cell["pinned"] and cell["verdict"] == "ok" and cell["derived"] == "tls.reset"
    assert cell["rule"] == "{sni=c.test} -> reset"  # the pin keeps the rule that decides it
    agreeing = ex.cell("x", "https://a.test/")
    assert agreeing["pinned"] and agreeing["derived"] == "dns.nxdomain" == agreeing["verdict"]


def test_rules_shadowed_by_an_earlier_stage_are_named(tmp_path: Path) -> None:
    _, idle = findings(tmp_path)
    dpi = idle[("x", 22)]
    assert dpi["stage"] == "dpi" and dpi["shadowed_by"] == ["resolver rule line 15"]
    assert dpi["why"].startswith("never decides a verdict of this scenario: the target it matches is decided "
                                 "first by resolver rule line 15")
    # The same rule at another ISP, without the resolver rule, decides https://a.test/.
    assert ("y", 31) not in idle


def test_rules_matching_nothing_or_only_sites_that_fail_on_their_own(tmp_path: Path) -> None:
    _, idle = findings(tmp_path)
    assert idle[("x", 23)]["why"].endswith("it matches no target") and idle[("x", 23)]["shadowed_by"] == []
    assert "the site itself fails (2)" in idle[("x", 19)]["why"]


def test_shaping_first_match_and_rules_that_decide_are_not_listed(tmp_path: Path) -> None:
    _, idle = findings(tmp_path)
    assert idle[("x", 27)]["shadowed_by"] == ["shaping rule line 26"]  # the delay rule matches first
    assert "none enough to change the verdict" in idle[("x", 26)]["why"]
    # Decides tls.reset for https://c.test/ (and, by residual, http://c.test/), although pinned ok.
    assert ("x", 24) not in idle
    assert ("x", 15) not in idle and ("x", 16) not in idle
    assert set(idle) == {("x", 19), ("x", 22), ("x", 23), ("x", 26), ("x", 27)}


def test_shipped_demo_has_no_findings() -> None:
    ex = explain(load_scenario(DEMO))
    assert ex.pin_conflicts == [] and ex.idle_rules == []


def test_proxy_rules_and_residual_only_rules_are_not_idle(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("""version: 1
name: p
internet:
  sites:
    - {name: a.test}
    - {name: b.test}
isps:
  - name: x
    resolver: {rules: [{match: {domain: b.test}, action: proxy}]}
  - name: z
    dpi: {rules: [{match: {sni: a.test}, action: reset, residual: 30}]}
targets: [https://a.test/, http://a.test/, https://b.test/]
""")
    ex = explain(load_scenario(path))
    assert ex.idle_rules == []  # the proxy rule relays b.test: ok, yet not idle
    assert ex.cell("x", "https://b.test/")["verdict"] == "ok"
    assert ex.cell("z", "http://a.test/")["reason"].startswith("residual block")


def test_cli_lists_findings_in_text_and_json(tmp_path: Path) -> None:
    path, _ = findings(tmp_path)
    text = harness("explain", str(path))
    assert text.returncode == 0, text.stderr
    assert "Pins that contradict the rules" in text.stdout
    assert "x https://c.test/: pinned ok, the rules give tls.reset (dpi rule line 24)" in text.stdout
    assert "Rules that never decide a verdict of this scenario:" in text.stdout
    assert "x dpi rule line 22 {sni=a.test} -> reset: the target it matches is decided first by resolver rule " \
           "line 15" in text.stdout
    assert "ok * (rules: tls.reset)" in text.stdout
    data = json.loads(harness("explain", str(path), "--json").stdout)
    assert [c["url"] for c in data["pin_conflicts"]] == ["https://c.test/", "http://a.test/"]
    assert {(r["isp"], r["line"]) for r in data["idle_rules"]} == {("x", 19), ("x", 22), ("x", 23), ("x", 26),
                                                                    ("x", 27)}
