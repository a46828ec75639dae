"""The worked examples of third-party probe types (examples/dot-probe, examples/doh-probe): each
installed as its own package, discovered through the harness.probes entry point, its server
declared by the package and started by the lab, run in the lab, scored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from conftest import ROOT, assert_no_leftovers

from netlab.addons import installed_servers
from netlab.compile import compile_lab
from netlab.loader import load_scenario

EXAMPLE = ROOT / "examples" / "dot-probe"
SCENARIO = EXAMPLE / "scenario.yaml"
DOH = ROOT / "examples" / "doh-probe"


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=180, env={**os.environ, "CI": "true"})


def install(probe: str, folder: Path) -> None:
    """pip install -e FOLDER, offline, unless the probe type is there (scripts/setup.sh did it)."""
    if not any(ep.name == probe for ep in entry_points(group="harness.probes")):
        res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                              "--no-build-isolation", "--root-user-action=ignore", "-e", str(folder)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        installed_servers.cache_clear()  # the entry points of this process changed


@pytest.fixture(scope="module")
def installed() -> None:
    install("dot", EXAMPLE)


@pytest.fixture(scope="module")
def doh_installed() -> None:
    install("doh", DOH)


def test_discovered_by_probes_list(installed: None) -> None:
    res = harness("probes", "list", "--json")
    assert res.returncode == 0, res.stderr
    dot = next(r for r in json.loads(res.stdout) if r["name"] == "dot")
    assert dot == {**dot, "version": "0.1.0", "module": "fauxisp_dot", "class": "DotProbe",
                   "test_name": "dnscheck", "error": None}
    assert dot["distribution"].startswith("fauxisp-dot-probe 0.1.0")
    assert dot["servers"] == [{"name": "dot", "port": 853, "sites": "all", "path": None, "module": "fauxisp_dot"}]
    assert "fauxisp_dot:DotProbe" in harness("probes", "list").stdout


def test_dot_probe_in_the_lab_is_scored(installed: None, lab_name: str, tmp_path: Path) -> None:
    # The server the probe package declares (netlab.addons), not one the compiler knows of.
    plan = compile_lab(load_scenario(SCENARIO), lab_name)
    dot_server = next(s for s in plan.hosts["inet"].services if s.name == "dot")
    assert dot_server.argv[:3] == ("python3", "-m", "fauxisp_dot") and plan.server_probes == ["dot"]
    res = harness("run", str(SCENARIO), "--probe", "dot", "--name", lab_name, "--out", str(tmp_path / "r"),
                  "--check", "--json")
    assert_no_leftovers(lab_name)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout)
    verdicts = {(v["vantage"], v["url"]): v["verdict"] for v in summary["verdicts"]}
    assert verdicts[("sni-isp", "https://dns.test:853/")] == "tls.reset"
    assert verdicts[("sni-isp", "https://resolver.example:853/open.test")] == "tls.timeout"
    assert verdicts[("ip-isp", "https://quad.test:853/")] == "tcp.reset"
    assert verdicts[("ip-isp", "https://resolver.example:853/open.test")] == "tcp.timeout"
    assert verdicts[("ip-isp", "https://dns.test:853/")] == "ok"
    assert summary["score"]["mismatches"] == 0 and summary["score"]["accuracy"] == 1.0
    lines = [json.loads(x) for x in (tmp_path / "r" / "measurements.jsonl").read_text().splitlines()]
    assert {m["test_name"] for m in lines} == {"dnscheck"}
    assert {m["annotations"]["probe"] for m in lines} == {"dot"}
    control = {m["input"]: m["test_keys"] for m in lines if m["x_vantage"] == "control"}
    # the DoT exchange itself: an A answer over TLS, from the server's lab address on 853
    keys = control["https://resolver.example:853/open.test"]
    dot = [q for q in keys["queries"] if q["engine"] == "dot"]
    assert dot and dot[0]["hostname"] == "open.test" and dot[0]["resolver_address"].endswith(":853")
    assert keys["x_dot_answers"] == [a["ipv4"] for a in dot[0]["answers"]] and keys["x_dot_answers"]
    assert keys["tls_handshakes"][0]["server_name"] == "resolver.example"


def test_doh_probe_and_its_server_in_the_lab(doh_installed: None, lab_name: str, tmp_path: Path) -> None:
    scenario = DOH / "scenario.yaml"
    plan = compile_lab(load_scenario(scenario), lab_name)
    doh_server = next(s for s in plan.hosts["inet"].services if s.name == "doh")
    assert doh_server.argv[:3] == ("python3", "-m", "fauxisp_doh") and "doh" in plan.server_probes
    res = harness("run", str(scenario), "--probe", "doh", "--name", lab_name, "--out", str(tmp_path / "r"),
                  "--check", "--json")
    assert_no_leftovers(lab_name)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout)
    verdicts = {(v["vantage"], v["url"]): v["verdict"] for v in summary["verdicts"]}
    resolver = "https://resolver.example/dns-query?name=open.test"
    assert verdicts[("sni-isp", "https://dns.test/dns-query")] == "tls.reset"
    assert verdicts[("sni-isp", resolver)] == "tls.timeout"
    assert verdicts[("ip-isp", "https://quad.test/dns-query")] == "tcp.reset"
    assert verdicts[("ip-isp", resolver)] == "tcp.timeout"
    assert verdicts[("dns-isp", "https://dns.test/dns-query")] == "dns.nxdomain"
    assert verdicts[("dns-isp", resolver)] == "ok"
    assert summary["score"]["mismatches"] == 0 and summary["score"]["accuracy"] == 1.0
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert "http" in json.dumps(run)  # the declared capabilities (all four stages) were recorded
    lines = [json.loads(x) for x in (tmp_path / "r" / "measurements.jsonl").read_text().splitlines()]
    assert {m["test_name"] for m in lines} == {"dnscheck"} and {m["annotations"]["probe"] for m in lines} == {"doh"}
    control = {m["input"]: m["test_keys"] for m in lines if m["x_vantage"] == "control"}
    keys = control[resolver]
    # the DoH exchange itself: RFC 8484 GET, an A answer for open.test in the body
    assert keys["requests"][0]["request"]["url"].startswith("https://resolver.example/dns-query?dns=")
    assert keys["x_status_code"] == 200
    doh = [q for q in keys["queries"] if q["engine"] == "doh"]
    assert doh and doh[0]["hostname"] == "open.test" and doh[0]["failure"] is None
    assert keys["x_doh_answers"] == [str(plan.site_addresses["open.test"])]


@pytest.mark.docker
def test_doh_probe_and_its_server_in_a_compose_lab(doh_installed: None, lab_name: str, tmp_path: Path) -> None:
    """The same in containers: the server's module comes into the lab internet's container with the
    mounted plugin (netlab.backends.compose.probe_plugins), the probe into the vantages'."""
    from netlab.deploy.images import build_image

    try:
        build_image()
    except Exception as exc:  # no Docker Engine here
        pytest.skip(f"no lab image: {exc}")
    res = harness("run", str(DOH / "scenario.yaml"), "--probe", "doh", "--name", lab_name, "--backend", "compose",
                  "--out", str(tmp_path / "r"), "--check", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout)
    verdicts = {(v["vantage"], v["url"]): v["verdict"] for v in summary["verdicts"]}
    assert verdicts[("sni-isp", "https://dns.test/dns-query")] == "tls.reset"
    assert verdicts[("dns-isp", "https://dns.test/dns-query")] == "dns.nxdomain"
    assert summary["score"]["mismatches"] == 0 and summary["score"]["accuracy"] == 1.0
    lines = [json.loads(x) for x in (tmp_path / "r" / "measurements.jsonl").read_text().splitlines()]
    control = {m["input"]: m["test_keys"] for m in lines if m["x_vantage"] == "control"}
    assert control["https://resolver.example/dns-query?name=open.test"]["x_doh_answers"]
    assert not Path(f"/run/netlab/{lab_name}").exists()
