"""DPI placement and the close action for real (issue 17 items 3-4): scenarios/border.yaml (the same
rules at an access and at a border middlebox) brought up with `harness up` on each backend,
measured by the harness (web and tls probes: verdicts equal the oracle's and the same table on both
backends, OONI's dns_consistency as the scenario pins it), and looked at with real tools through
`harness exec`: the system resolver's answer (dig on netns; the image has no dig, so Python's
getaddrinfo in a container), the forged FIN (curl on netns, openssl on both) and the border
middlebox filtering the router's own traffic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, assert_no_leftovers, docker_ok, lab_name_prefix

from netlab.loader import load_scenario

BORDER = ROOT / "scenarios" / "border.yaml"
FORGED = "10.10.34.35"
# The web probe's verdicts: the same at both ISPs (the injector races its query to the public
# resolver at both), and on both backends.
WEB = {
    "https://video.test/": "dns.injected", "http://video.test/": "dns.injected",
    "https://social.test/": "tls.reset", "http://social.test/": "ok",
    "https://news.test/": "tls.eof", "http://news.test/": "http.eof",
    "https://ok.test/": "ok", "http://ok.test/": "ok",
}


def harness(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, "CI": "true"}, stdin=subprocess.DEVNULL)


@dataclass
class Lab:
    name: str
    backend: str
    web: dict[tuple[str, str], dict]  # (vantage, url) -> the verdict row of `harness run --json`
    tls: dict[tuple[str, str], str]
    measurements: dict[tuple[str, str], dict]  # (vantage, url) -> OONI test keys (web probe)
    sites: dict[str, str]

    def exec(self, vantage: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return harness("exec", self.name, vantage, "--", *argv, timeout=60)


def measure(name: str, backend: str, out: Path, probe: str) -> dict:
    res = harness("run", str(BORDER), "--name", name, "--backend", backend, "--probe", probe, "--json",
                  "--out", str(out))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(res.stdout)


@pytest.fixture(scope="module", params=["netns", pytest.param("compose", marks=pytest.mark.docker)])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    backend = request.param
    if backend == "compose" and not docker_ok():
        pytest.skip("no Docker Engine")
    name = f"{lab_name_prefix()}{uuid.uuid4().hex[:6]}"
    up = harness("up", str(BORDER), "--name", name, "--backend", backend, timeout=1200)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        out = tmp_path_factory.mktemp(f"border-{backend}")
        web, tls = measure(name, backend, out / "web", "web"), measure(name, backend, out / "tls", "tls")
        lines = (out / "web" / "measurements.jsonl").read_text().splitlines()
        keys = {(m["x_vantage"], m["input"]): m["test_keys"] for m in map(json.loads, lines)}
        state = json.loads((Path("/run/netlab") / name / "state.json").read_text())
        yield Lab(name, backend, {(v["vantage"], v["url"]): v for v in web["verdicts"]},
                  {(v["vantage"], v["url"]): v["verdict"] for v in tls["verdicts"]}, keys, state["site_addresses"])
    finally:
        down = harness("down", name)
        assert down.returncode == 0, down.stdout + down.stderr
    if backend == "netns":
        assert_no_leftovers(name)


def test_verdicts_equal_the_oracle_on_both_backends(lab: Lab) -> None:
    for isp in ("access", "border"):
        assert {u: row["verdict"] for (v, u), row in lab.web.items() if v == isp} == WEB, isp
    assert all(row["match"] for row in lab.web.values()), [r for r in lab.web.values() if not r["match"]]
    # the reasons tell the border apart: the oracle's, and the analysis's from the measurement
    border, access = lab.web[("border", "https://video.test/")], lab.web[("access", "https://video.test/")]
    assert "the ISP resolver caches the forged answer" in border["expected_reason"]
    assert "the system resolver answered the forged address too" in border["why"]
    assert "system resolver" not in access["why"]
    # probes that ask only the system resolver see the poisoned cache behind the border only
    assert lab.tls[("border", "https://video.test/")] == "dns.bogon"
    assert lab.tls[("access", "https://video.test/")] == "ok"
    assert lab.tls[("border", "https://news.test/")] == lab.tls[("access", "https://news.test/")] == "tls.eof"


def test_measurements_carry_the_forged_system_answer(lab: Lab) -> None:
    pins = load_scenario(BORDER).expect_ooni
    for isp, urls in pins.items():
        for url, want in urls.items():
            tk = lab.measurements[(isp, url)]
            assert {k: tk.get(k) for k in want} == want, (isp, url)
    system = {isp: [a["ipv4"] for q in lab.measurements[(isp, "https://video.test/")]["queries"]
                    if q["engine"] == "system" for a in q.get("answers") or [] if a.get("ipv4")]
              for isp in ("access", "border", "control")}
    assert system["border"] == [FORGED]
    assert system["access"] == system["control"] == [lab.sites["video.test"]]
    eof = lab.measurements[("border", "http://news.test/")]
    assert eof["http_experiment_failure"] == "eof_error" and eof["blocking"] == "http-failure"


def system_lookup(lab: Lab, vantage: str, name: str) -> str:
    if lab.backend == "netns":
        res = lab.exec(vantage, "dig", "+short", "+tries=1", "+time=5", name)
    else:  # the lab image has no dig: the C library's resolver, as any program's lookup
        res = lab.exec(vantage, "python3", "-c", f"import socket; print(socket.gethostbyname({name!r}))")
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.strip()


def test_the_system_resolver_is_poisoned_behind_the_border_only(lab: Lab) -> None:
    assert system_lookup(lab, "border", "video.test") == FORGED
    assert system_lookup(lab, "border", "www.video.test") == FORGED  # any name under it
    assert system_lookup(lab, "access", "video.test") == lab.sites["video.test"]
    assert system_lookup(lab, "control", "video.test") == lab.sites["video.test"]
    assert system_lookup(lab, "border", "ok.test") == lab.sites["ok.test"]


def s_client(lab: Lab, vantage: str, address: str, name: str) -> str:
    res = lab.exec(vantage, "openssl", "s_client", "-connect", f"{address}:443", "-servername", name)
    return res.stdout + res.stderr


def test_close_is_an_end_of_stream(lab: Lab) -> None:
    for isp in ("access", "border"):
        out = s_client(lab, isp, "news.test", "news.test")
        assert "unexpected eof while reading" in out and "read 0 bytes" in out, out
        assert "Cipher is (NONE)" in out
    assert "BEGIN CERTIFICATE" not in s_client(lab, "border", "news.test", "news.test")
    assert "Cipher is TLS" in s_client(lab, "control", "news.test", "news.test")
    if lab.backend == "netns":  # curl: only the netns hosts have it
        res = lab.exec("border", "curl", "-sS", "--max-time", "10", "http://news.test/")
        assert res.returncode == 52 and "Empty reply from server" in res.stderr, res.stderr
        res = lab.exec("access", "curl", "-sS", "--max-time", "10", "https://news.test/")
        assert res.returncode == 35 and "SSL_ERROR_SYSCALL" in res.stderr, res.stderr
        assert lab.exec("control", "curl", "-sS", "--max-time", "10", "http://news.test/").returncode == 0
    else:  # a plain socket: the request is answered by an end of stream
        code = ("import socket; s = socket.create_connection(('news.test', 80), 5); "
                "s.sendall(b'GET / HTTP/1.1\\r\\nHost: news.test\\r\\n\\r\\n'); print(repr(s.recv(65536)))")
        assert lab.exec("border", "python3", "-c", code).stdout.strip() == "b''"
        assert lab.exec("control", "python3", "-c", code).stdout.startswith("b'HTTP/1.1 200")


def test_the_border_filters_the_isps_own_traffic(lab: Lab) -> None:
    social = lab.sites["social.test"]
    out = s_client(lab, "border.gw", social, "social.test")
    assert "errno=104" in out, out  # the SNI rule resets the router's own connection
    assert "Cipher is TLS" in s_client(lab, "access.gw", social, "social.test")  # an access censor does not see it
    assert "Cipher is TLS" in s_client(lab, "border.gw", lab.sites["ok.test"], "ok.test")
