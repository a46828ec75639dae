"""Dual stack for real (issue 15 item 3): scenarios/dual-stack.yaml brought up with `harness up` on
each backend, measured by the web probe (verdicts equal the oracle's; both families resolved and
connected to, as OONI measures them), and looked at with real tools inside the vantages through
`harness exec`: dig's AAAA answers, and curl -4 / curl -6, which fail exactly where the oracle's
per-family view (netlab.oracle.expect_family) says a client limited to that family is blocked; the
middlebox (resets, blockpage, DNS inject), the interceptor and the shaper acting on IPv6 flows."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import ROOT, docker_ok, harness_cli, lab_name_prefix

from netlab.addressing import v6_of
from netlab.blockpage import MARKER as BLOCKPAGE_MARKER
from netlab.loader import load_scenario
from netlab.oracle import expect_family, expected_verdicts
from netlab.target import Target
from netlab.verdict import Verdict

DUAL = ROOT / "scenarios" / "dual-stack.yaml"
ISP = "v4censor"
# curl's exit status for what a blocked family does: 7 no connection (reset, ICMP), 28 a timeout
# (a dropped SYN), 35 a TLS handshake the middlebox reset.
CURL_FAILURES = {Verdict.TCP_RESET: {7}, Verdict.TCP_UNREACHABLE: {7}, Verdict.TCP_TIMEOUT: {28},
                 Verdict.TLS_RESET: {35}, Verdict.TLS_CERT_INVALID: {60}}


@dataclass
class Lab:
    name: str
    backend: str
    verdicts: dict[tuple[str, str], str]
    keys: dict[tuple[str, str], dict]  # (vantage, url) -> OONI test keys

    def exec(self, vantage: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return harness_cli("exec", self.name, vantage, "--", *argv, timeout=timeout)


@pytest.fixture(scope="module", params=["netns", pytest.param("compose", marks=pytest.mark.docker)])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    backend = request.param
    if backend == "compose" and not docker_ok():
        pytest.skip("no Docker Engine")
    name = f"{lab_name_prefix()}{uuid.uuid4().hex[:6]}"
    up = harness_cli("up", str(DUAL), "--name", name, "--backend", backend, timeout=1200)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        out = tmp_path_factory.mktemp(f"dual-{backend}")
        res = harness_cli("run", str(DUAL), "--name", name, "--backend", backend, "--json", "--out", str(out))
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        rows = json.loads(res.stdout)["verdicts"]
        lines = (out / "measurements.jsonl").read_text().splitlines()
        yield Lab(name, backend, {(v["vantage"], v["url"]): v["verdict"] for v in rows},
                  {(m["x_vantage"], m["input"]): m["test_keys"] for m in map(json.loads, lines)})
    finally:
        down = harness_cli("down", name)
        assert down.returncode == 0, down.stdout + down.stderr


def test_verdicts_equal_the_oracle(lab: Lab) -> None:
    scenario = load_scenario(DUAL)
    want = {k: e.verdict.value for k, e in expected_verdicts(scenario, scenario.site_addresses()).items()}
    assert lab.verdicts == want
    # The leaks: one family blocked, the page loads over the other.
    assert lab.verdicts[(ISP, "https://v4blocked.test/")] == "ok"
    assert lab.verdicts[(ISP, "https://sni.test/")] == "ok"
    assert lab.verdicts[(ISP, "https://bothblocked.test/")] == "tcp.timeout"


def test_both_families_are_measured(lab: Lab) -> None:
    addrs = load_scenario(DUAL).site_addresses()
    v4, v6 = str(addrs["v4blocked.test"]), str(addrs.all6("v4blocked.test")[0])
    keys = lab.keys[(ISP, "https://v4blocked.test/")]
    assert keys["x_resolved"]["system"] == [v4, v6]
    assert [q["query_type"] for q in keys["queries"] if q["engine"] == "system"] == ["A", "AAAA"]
    connects = {t["ip"]: t["status"]["failure"] for t in keys["tcp_connect"] if "classic" in t["tags"]}
    assert connects == {v4: "generic_timeout_error", v6: None}  # IPv4 dropped, IPv6 fetched
    assert keys["blocking"] is False and keys["accessible"] is True  # OONI's conclusion: a leak is no block
    control = lab.keys[("control", "https://v4blocked.test/")]
    assert {t["ip"]: t["status"]["failure"] for t in control["tcp_connect"] if "classic" in t["tags"]} == {
        v4: None, v6: None}
    # OONI's test helper answers for both families' endpoints, IPv6 ones written "[ip]:port".
    assert keys["control"]["tcp_connect"] == {f"{v4}:443": {"status": True, "failure": None},
                                              f"[{v6}]:443": {"status": True, "failure": None}}


def test_dig_answers_aaaa(lab: Lab) -> None:
    addrs = load_scenario(DUAL).site_addresses()
    res = lab.exec(ISP, "dig", "+short", "+tries=1", "+time=5", "AAAA", "clean.test")
    assert res.stdout.split() == [str(v6_of(addrs["clean.test"]))], res.stdout + res.stderr
    res = lab.exec(ISP, "dig", "+short", "+tries=1", "+time=5", "AAAA", "ownv6.test")
    assert res.stdout.split() == ["2001:2::60:6"], res.stdout + res.stderr
    res = lab.exec(ISP, "dig", "+tries=1", "+time=5", "AAAA", "gone.test")  # the ISP's resolver lies for both
    assert "status: NXDOMAIN" in res.stdout, res.stdout + res.stderr
    # A forged answer is an A record only (RPZ local data): the AAAA query gets NOERROR, no answer.
    res = lab.exec(ISP, "dig", "+tries=1", "+time=5", "AAAA", "forged.test")
    assert "status: NOERROR" in res.stdout and "ANSWER: 0" in res.stdout, res.stdout + res.stderr
    res = lab.exec(ISP, "dig", "+short", "+tries=1", "+time=5", "A", "forged.test")
    assert res.stdout.split() == ["10.10.34.35"], res.stdout + res.stderr


@pytest.mark.parametrize("url", ["https://v4blocked.test/", "https://v6blocked.test/", "https://ownv6.test/",
                                 "https://sni.test/", "https://bothblocked.test/", "https://clean.test/",
                                 "https://sniboth.test/", "https://intercepted.test/"])
def test_curl_per_family_as_the_oracle_says(lab: Lab, url: str) -> None:
    scenario = load_scenario(DUAL)
    addrs = scenario.site_addresses()
    for family in (4, 6):
        want = expect_family(scenario, scenario.isp(ISP), Target.parse(url), addrs, family).verdict
        res = lab.exec(ISP, "curl", f"-{family}", "-sS", "-o", "/dev/null", "-w", "%{remote_ip}",
                       "--connect-timeout", "3", "--max-time", "8", url)
        if want == Verdict.OK:
            assert res.returncode == 0, (family, res.stdout, res.stderr)
            assert (":" in res.stdout) == (family == 6), res.stdout  # it went over that family
        else:
            assert res.returncode in CURL_FAILURES[want], (family, want, res.returncode, res.stderr)
    # The control reaches every site over both families.
    for family in (4, 6):
        assert lab.exec("control", "curl", f"-{family}", "-sS", "-o", "/dev/null", "--max-time", "8",
                        url).returncode == 0


def test_blockpage_over_both_families(lab: Lab) -> None:
    """The middlebox forges its page into an IPv6 flow as into an IPv4 one (http_host rule, no family)."""
    for family in (4, 6):
        res = lab.exec(ISP, "curl", f"-{family}", "-sS", "-w", "\n%{http_code} %{remote_ip}", "--max-time", "8",
                       "http://page.test/")
        assert res.returncode == 0, (family, res.stderr)
        status, remote = res.stdout.rsplit("\n", 1)[1].split()
        assert status == "451" and BLOCKPAGE_MARKER in res.stdout and (":" in remote) == (family == 6), res.stdout


def test_dns_inject_over_ipv6_transport(lab: Lab) -> None:
    """A query that crosses the router over IPv6 gets the middlebox's forged A record first. An
    unconnected socket (dnspython's): nothing answers on the site's port 53, and a connected one
    (dig) would report the ICMP port unreachable before reading the queued forged answer."""
    addrs = load_scenario(DUAL).site_addresses()
    for server in (str(addrs.all6("clean.test")[0]), str(addrs["clean.test"])):
        res = lab.exec(ISP, "python3", "-c", "import sys, dns.message, dns.query; "
                       "r = dns.query.udp(dns.message.make_query('injected.test', 'A'), sys.argv[1], timeout=5); "
                       "print(*[rd.address for rr in r.answer for rd in rr])", server)
        assert res.returncode == 0 and res.stdout.split() == ["10.10.34.35"], (server, res.stdout, res.stderr)


def test_shaping_by_name_on_ipv6_only(lab: Lab) -> None:
    """shaping {sni: slow.test, family: 6} at 256 kbit/s: the 64 KiB page takes about 2 s over
    IPv6 (the middlebox marks the IPv6 flow, ip6tables CLASSIFY puts it in the htb class) and
    comes at once over IPv4."""
    took = {}
    for family in (4, 6):
        res = lab.exec(ISP, "curl", f"-{family}", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{time_total}",
                       "--max-time", "20", "https://slow.test/")
        assert res.returncode == 0, (family, res.stderr)
        size, seconds = res.stdout.split()
        assert int(size) == 65536
        took[family] = float(seconds)
    assert took[6] > 1.2 and took[4] < took[6] / 2, took
