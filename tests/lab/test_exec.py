"""Your own tools inside a lab (issue 19 item 3): `harness exec` runs curl, dig and openssl at a
vantage of a running demo lab, and each sees what the harness's own verdict for that vantage says;
`harness shell` and `harness ca`. netns; the compose image has no curl or dig (see below)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, assert_no_leftovers, lab_name_prefix

DEMO = ROOT / "scenarios" / "demo.yaml"
TOOLS = ("curl", "dig", "openssl")


def harness(*args: str, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, "CI": "true"}, input=stdin)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[tuple[str, str], str]]]:
    """A demo lab brought up with `harness up`, and the harness's verdicts measured on it."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/setup.sh installs curl, dnsutils, openssl)")
    name = f"{lab_name_prefix()}{uuid.uuid4().hex[:6]}"
    up = harness("up", str(DEMO), "--name", name)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        res = harness("run", str(DEMO), "--name", name, "--json", "--out", str(tmp_path_factory.mktemp("exec") / "r"))
        assert res.returncode == 0, res.stdout + res.stderr
        verdicts = {(v["vantage"], v["url"]): v["verdict"] for v in json.loads(res.stdout)["verdicts"]}
        yield name, verdicts
    finally:
        down = harness("down", name)
        assert down.returncode == 0, down.stdout + down.stderr
    assert_no_leftovers(name)


def exec_(lab: str, vantage: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return harness("exec", lab, vantage, "--", *argv, stdin=stdin, timeout=60)


def dig_status(lab: str, vantage: str, name: str) -> str:
    res = exec_(lab, vantage, "dig", "+tries=1", "+time=5", name)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.split("status: ", 1)[1].split(",", 1)[0]


def curl(lab: str, vantage: str, url: str) -> subprocess.CompletedProcess[str]:
    # No --cacert: the lab CA is trusted through CURL_CA_BUNDLE, which exec sets.
    return exec_(lab, vantage, "curl", "-sS", "--max-time", "10", url)


def s_client(lab: str, vantage: str, name: str) -> subprocess.CompletedProcess[str]:
    return exec_(lab, vantage, "openssl", "s_client", "-connect", f"{name}:443", "-servername", name,
                 "-verify_return_error", stdin="")


def test_isp_a_tools_see_the_verdicts(demo: tuple[str, dict[tuple[str, str], str]]) -> None:
    lab, verdicts = demo
    assert verdicts[("isp-a", "https://news.test/")] == "dns.nxdomain"
    assert dig_status(lab, "isp-a", "news.test") == "NXDOMAIN"
    assert verdicts[("isp-a", "https://www.blog.test/")] == "tcp.reset"
    res = curl(lab, "isp-a", "https://www.blog.test/")
    assert res.returncode == 7, res.stderr  # curl: couldn't connect (the RST answering the SYN)
    assert verdicts[("isp-a", "https://ok.test/")] == "ok"
    assert "lab origin" in curl(lab, "isp-a", "https://ok.test/").stdout


def test_isp_b_tools_see_the_verdicts(demo: tuple[str, dict[tuple[str, str], str]]) -> None:
    lab, verdicts = demo
    assert verdicts[("isp-b", "https://social.test/")] == "tls.reset"
    res = s_client(lab, "isp-b", "social.test")
    assert res.returncode != 0 and "errno=104" in res.stdout + res.stderr  # ECONNRESET after the ClientHello
    assert verdicts[("isp-b", "http://news.test/")] == "http.blockpage"
    res = curl(lab, "isp-b", "http://news.test/")
    assert res.returncode == 0 and "blocked by your ISP" in res.stdout
    assert dig_status(lab, "isp-b", "news.test") == "NOERROR"


def test_control_sees_everything(demo: tuple[str, dict[tuple[str, str], str]]) -> None:
    lab, verdicts = demo
    assert {u: v for (vantage, u), v in verdicts.items() if vantage == "control"} == \
        {u: "ok" for (vantage, u) in verdicts if vantage == "control"}
    assert dig_status(lab, "control", "news.test") == "NOERROR"
    for url in ("https://www.blog.test/", "http://news.test/", "https://news.test/"):
        res = curl(lab, "control", url)
        assert res.returncode == 0 and "lab origin" in res.stdout, (url, res.stderr)
    res = s_client(lab, "control", "social.test")
    assert res.returncode == 0 and "Verify return code: 0 (ok)" in res.stdout  # the lab CA is trusted


def test_exit_status_environment_and_errors(demo: tuple[str, dict[tuple[str, str], str]]) -> None:
    lab, _ = demo
    assert exec_(lab, "isp-a", "sh", "-c", "exit 7").returncode == 7
    ca = harness("ca", lab)
    assert ca.returncode == 0 and ca.stdout.strip() == f"/run/netlab/{lab}/pki/ca.pem"
    env = exec_(lab, "isp-a", "sh", "-c", 'echo "$SSL_CERT_FILE $REQUESTS_CA_BUNDLE $HOME"; ls "$HOME/.pki/nssdb"')
    assert env.stdout.split()[:3] == [ca.stdout.strip(), ca.stdout.strip(), f"/run/netlab/{lab}/tools/home"]
    assert "cert9.db" in env.stdout
    if shutil.which("certutil"):  # the NSS database trusts the lab CA (Chromium, Firefox)
        listed = subprocess.run(["certutil", "-L", "-d", f"sql:/run/netlab/{lab}/tools/home/.pki/nssdb"],
                                capture_output=True, text=True, timeout=60)
        assert "lab-ca" in listed.stdout and "C,," in listed.stdout
    # a router host and the lab internet (a site name) are reachable too
    assert "isp-a.gw" in exec_(lab, "isp-a.gw", "sh", "-c", "echo $FAUXISP_HOST").stdout
    assert exec_(lab, "news.test", "sh", "-c", "echo $FAUXISP_HOST").stdout.strip() == "inet"
    bad = exec_(lab, "nope", "true")
    assert bad.returncode == 2 and "control" in bad.stdout
    assert harness("exec", "no-such-lab", "isp-a", "--", "true").returncode == 2
    assert harness("exec", "../x", "isp-a", "--", "true").returncode == 2  # not a lab name
    shell = harness("shell", lab, "isp-a", stdin="echo in-$FAUXISP_HOST; exit 5\n", timeout=60)
    assert shell.returncode == 5 and "in-isp-a" in shell.stdout


@pytest.mark.docker
def test_compose_lab_exec(lab_name: str) -> None:
    """On a compose lab: only what the lab image has. It has openssl but neither curl nor dig (the
    image is built by netlab.deploy.images, not here), so the curl and dig checks are netns-only."""
    from netlab.deploy.images import build_image

    try:
        image = build_image().latest
    except Exception as exc:  # no Docker Engine here
        pytest.skip(f"no lab image: {exc}")
    has = subprocess.run(["docker", "run", "--rm", "--network", "none", image, "sh", "-c",
                          "command -v openssl"], capture_output=True, text=True, timeout=120)
    if has.returncode != 0:
        pytest.skip("the lab image has no openssl")
    up = harness("up", str(DEMO), "--name", lab_name, "--backend", "compose")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        assert exec_(lab_name, "isp-a", "sh", "-c", "exit 7").returncode == 7
        res = s_client(lab_name, "isp-b", "social.test")
        assert res.returncode != 0 and "errno=104" in res.stdout + res.stderr
        res = s_client(lab_name, "control", "social.test")
        assert res.returncode == 0 and "Verify return code: 0 (ok)" in res.stdout
        env = exec_(lab_name, "control", "sh", "-c", 'echo "$SSL_CERT_FILE"; cat /etc/resolv.conf')
        assert f"/lab/{lab_name}/pki/ca.pem" in env.stdout and "198.18.0.2" in env.stdout
    finally:
        assert harness("down", lab_name).returncode == 0
    assert not Path(f"/run/netlab/{lab_name}").exists()
