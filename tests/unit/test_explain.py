"""harness explain: the oracle's table and every ISP's compiled dataplane, without a lab."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.explain import explain, unbound_policy
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
    assert {r["action"] for r in b.dpi_config["rules"]} == {"reset", "blockpage", "inject", "drop"}
    assert any(c.startswith("tc class add dev down0") and "256000bit" in c for c in b.tc)
    assert b.notes and all(not n.startswith("isp-a:") for n in b.notes)


def test_unbound_policy_keeps_refuse_and_servfail_stubs_only() -> None:
    conf = ('server:\n  interface: 10.1.0.1\n  local-zone: "test." nodefault\n  local-zone: "x.test." refuse\n'
            'stub-zone:\n  name: "."\n  stub-addr: 198.18.0.1\nstub-zone:\n  name: "y.test."\n  stub-addr: 127.0.0.1\n')
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
