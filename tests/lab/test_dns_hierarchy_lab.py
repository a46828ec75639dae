"""The lab's DNS hierarchy for real (issue 15 item 1), on both backends: `dig +trace` inside a
vantage walks root -> TLD server -> the zone's authority, with the referrals and glue NSD gives;
AAAA, TXT, MX and NS records answer; the whoami name answers who asks; CNAME chains resolve, are
blocked by a rule on any name of the chain as the oracle says, and the probe's OONI queries carry
the CNAME answer."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, assert_no_leftovers, lab_name_prefix

SCENARIO = ROOT / "scenarios" / "dns-hierarchy.yaml"


def docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def harness(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, "CI": "true"})


@dataclass
class Lab:
    name: str
    backend: str
    verdicts: dict[tuple[str, str], str]
    out: Path

    def exec(self, vantage: str, *argv: str) -> str:
        res = harness("exec", self.name, vantage, "--", *argv, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout


@pytest.fixture(scope="module", params=["netns", pytest.param("compose", marks=[
    pytest.mark.docker, pytest.mark.skipif(not docker_ok(), reason="no Docker Engine")])])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The dns-hierarchy scenario brought up with `harness up`, measured with `harness run --check`."""
    backend = request.param
    if backend == "netns" and shutil.which("dig") is None:
        pytest.skip("dig not installed (scripts/setup.sh installs bind9-dnsutils)")
    name = f"{lab_name_prefix()}{uuid.uuid4().hex[:6]}"
    up = harness("up", str(SCENARIO), "--name", name, "--backend", backend)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        out = tmp_path_factory.mktemp(f"dns-{backend}") / "r"
        run = harness("run", str(SCENARIO), "--name", name, "--backend", backend, "--check", "--json",
                      "--out", str(out))
        assert run.returncode == 0, run.stdout + run.stderr  # --check: every verdict is the oracle's
        verdicts = {(v["vantage"], v["url"]): v["verdict"] for v in json.loads(run.stdout)["verdicts"]}
        yield Lab(name, backend, verdicts, out)
    finally:
        down = harness("down", name, "--backend", backend)
        assert down.returncode == 0, down.stdout + down.stderr
    if backend == "netns":
        assert_no_leftovers(name)


def trace_hops(output: str) -> list[str]:
    """The servers `dig +trace` got each step's answer from: `198.18.0.1#53(ns.lab-root)`, ..."""
    return re.findall(r";; Received \d+ bytes from (\S+) in", output)


def records(output: str) -> list[tuple[str, str, str]]:
    """(owner, type, data) of the records dig printed."""
    out = []
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 5 and not line.startswith(";") and parts[2] == "IN":
            out.append((parts[0], parts[3], " ".join(parts[4:])))
    return out


def test_dig_trace_walks_root_tld_and_zone_authority(lab: Lab) -> None:
    out = lab.exec("isp-a", "dig", "+trace", "-4", "+tries=1", "+time=5", "www.news.test")
    hops = trace_hops(out)
    # First the vantage's own resolver (the root's NS), then each server of the hierarchy.
    assert hops[0] == "10.1.0.1#53(10.1.0.1)", out
    assert hops[1:] == ["198.18.0.1#53(ns.lab-root)", "198.18.0.3#53(ns.nic.test)",
                        "198.18.0.4#53(ns1.news.test)"], out
    got = records(out)
    assert (".", "NS", "ns.lab-root.") in got  # the root's answer is a referral to the TLD...
    assert ("test.", "NS", "ns.nic.test.") in got
    assert ("news.test.", "NS", "ns1.news.test.") in got  # ... whose answer is a referral to the zone
    assert ("www.news.test.", "CNAME", "news.test.") in got
    assert any(o == "news.test." and t == "A" for o, t, _ in got)


def test_glue_in_the_referrals(lab: Lab) -> None:
    root = lab.exec("control", "dig", "+norecurse", "@198.18.0.1", "www.news.test")
    assert "status: NOERROR" in root and "ANSWER: 0" in root
    assert ("test.", "NS", "ns.nic.test.") in records(root)
    assert ("ns.nic.test.", "A", "198.18.0.3") in records(root)  # glue in the additional section
    tld = lab.exec("control", "dig", "+norecurse", "@198.18.0.3", "www.news.test")
    assert ("news.test.", "NS", "ns1.news.test.") in records(tld)
    assert ("ns1.news.test.", "A", "198.18.0.4") in records(tld)


def test_a_censored_name_still_traces_from_the_root(lab: Lab) -> None:
    # The ISP resolver answers NXDOMAIN for edge.cdn.test; a trace asks the hierarchy itself.
    assert lab.verdicts[("isp-a", "https://edge.cdn.test/")] == "dns.nxdomain"
    assert "status: NXDOMAIN" in lab.exec("isp-a", "dig", "+tries=1", "+time=5", "edge.cdn.test")
    out = lab.exec("isp-a", "dig", "+trace", "-4", "+tries=1", "+time=5", "edge.cdn.test")
    assert trace_hops(out)[-1] == "198.18.0.4#53(ns1.cdn.test)", out
    assert any(o == "edge.cdn.test." and t == "A" for o, t, _ in records(out))


def test_a_zone_on_a_dns_host(lab: Lab) -> None:
    out = lab.exec("control", "dig", "+trace", "-4", "+tries=1", "+time=5", "blog.test")
    assert re.search(r"198\.18\.0\.4#53\(ns[12]\.dnshost\.test\)$", trace_hops(out)[-1]), out
    ns = lab.exec("control", "dig", "+short", "NS", "blog.test").split()
    assert sorted(ns) == ["ns1.dnshost.test.", "ns2.dnshost.test."]


def test_records_beyond_a(lab: Lab) -> None:
    assert lab.exec("control", "dig", "+short", "AAAA", "news.test").split() == ["2001:2::10"]
    assert sorted(lab.exec("control", "dig", "+short", "TXT", "news.test").splitlines()) == [
        '"site=news.test"', '"v=spf1 -all"']
    assert lab.exec("control", "dig", "+short", "MX", "news.test").strip() == "10 mail.news.test."


def test_whoami_names_the_resolver_that_asks(lab: Lab) -> None:
    # Each ISP's resolver recurses from its router's uplink; the control asks the public resolver.
    for vantage, resolver in (("isp-a", "10.1.255.1"), ("isp-b", "10.2.255.1"), ("control", "198.18.0.2")):
        assert lab.exec(vantage, "dig", "+short", "TXT", "whoami.dnscheck.test").split() == [f'"{resolver}"']
        assert lab.exec(vantage, "dig", "+short", "whoami.dnscheck.test").split() == [resolver]
    out = lab.exec("isp-a", "dig", "+trace", "-4", "+tries=1", "+time=5", "TXT", "whoami.dnscheck.test")
    assert trace_hops(out)[-1] == "198.18.0.5#53(ns1.whoami.dnscheck.test)", out
    assert ("whoami.dnscheck.test.", "TXT", '"10.1.0.2"') in records(out)  # traced: the vantage asked itself


def test_cname_chains_in_verdicts_and_ooni_queries(lab: Lab) -> None:
    v = lab.verdicts
    assert v[("control", "https://www.shop.test/")] == "ok"  # fetched through the two-CNAME chain
    assert v[("isp-a", "https://www.shop.test/")] == "dns.nxdomain"  # the rule is on the chain's end
    assert v[("isp-b", "https://www.shop.test/")] == "dns.bogon"  # ... or on its middle
    assert v[("isp-b", "https://mirror.blog.test/")] == "ok"  # `refused` acts on the name asked only
    assert v[("isp-a", "https://mirror.blog.test/")] == "tcp.reset"  # the firewall sees news.test's address
    # Whatever the resolver has cached: the chain's end first, then the alias, still NXDOMAIN.
    for name in ("edge.cdn.test", "shop.cdn.test", "www.shop.test"):
        assert "status: NXDOMAIN" in lab.exec("isp-a", "dig", "+tries=1", "+time=5", name), name
    assert "status: NOERROR" in lab.exec("control", "dig", "+tries=1", "+time=5", "www.shop.test")
    found = 0
    for line in (lab.out / "measurements.jsonl").read_text().splitlines():
        m = json.loads(line)
        if m["input"] != "https://www.shop.test/":
            continue
        for q in m["test_keys"]["queries"]:
            if q["resolver_address"].startswith("198.18.0.2:"):  # the public resolver, which follows the chain
                assert q["failure"] is None
                assert q["answers"][-1]["answer_type"] == "CNAME"
                assert q["answers"][-1]["hostname"] == "edge.cdn.test."
                found += 1
    assert found >= 3  # every vantage asks the public resolver too
