"""TLS interception by the ISP's own CA (the DPI action intercept), in a real lab on both backends:
the harness's verdicts equal the oracle's, the probe's TLS step writes OONI's
ssl_unknown_authority, and real tools at the vantage see the censor: openssl shows its issuer,
curl refuses the certificate, curl -k gets the relayed site or the censor's page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, assert_no_leftovers

SCENARIO = ROOT / "scenarios" / "interception.yaml"
ISSUER = "fauxisp kzisp interception CA"
PAGE = "Install the national security certificate"


def harness(*args: str, stdin: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, "CI": "true"}, input=stdin)


def exec_(lab: str, vantage: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return harness("exec", lab, vantage, "--", *argv, stdin="", timeout=60)


def s_client(lab: str, vantage: str, name: str) -> subprocess.CompletedProcess[str]:
    return exec_(lab, vantage, "openssl", "s_client", "-connect", f"{name}:443", "-servername", name)


def measure(lab: str, out: Path, backend: str = "netns") -> dict[tuple[str, str], str]:
    """`harness run --check` on the running lab: every verdict the oracle's; the OONI measurements
    carry ssl_unknown_authority in the intercepted fetches' TLS handshakes."""
    res = harness("run", str(SCENARIO), "--name", lab, "--backend", backend, "--check", "--json", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    verdicts = {(v["vantage"], v["url"]): v["verdict"] for v in json.loads(res.stdout)["verdicts"]}
    failures = {}
    for line in (out / "measurements.jsonl").read_text().splitlines():
        m = json.loads(line)
        if m["input"] == "https://news.test/":
            failures[m["probe_asn"]] = [h["failure"] for h in m["test_keys"]["tls_handshakes"]]
    assert sorted(failures.values(), key=str) == [["ssl_unknown_authority"], [None], [None]], failures
    return verdicts


def check_openssl(lab: str) -> None:
    res = s_client(lab, "kzisp", "news.test")
    assert f"O = {ISSUER}" in res.stdout and "Verify return code: 0 (ok)" not in res.stdout, res.stdout
    res = s_client(lab, "kzisp", "clean.test")  # spliced on untouched: the site's own certificate
    assert "O = fauxisp lab CA" in res.stdout and "Verify return code: 0 (ok)" in res.stdout, res.stdout
    res = s_client(lab, "control", "news.test")
    assert "O = fauxisp lab CA" in res.stdout and "Verify return code: 0 (ok)" in res.stdout, res.stdout
    # Its users installed the censor's CA: the same interception, and the certificate verifies.
    res = s_client(lab, "kzinstalled", "news.test")
    assert "O = fauxisp kzinstalled interception CA" in res.stdout, res.stdout
    assert "Verify return code: 0 (ok)" in res.stdout, res.stdout


def test_interception_netns(lab_name: str, tmp_path: Path) -> None:
    missing = [t for t in ("curl", "openssl") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/setup.sh installs them)")
    up = harness("up", str(SCENARIO), "--name", lab_name)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        verdicts = measure(lab_name, tmp_path / "r")
        assert verdicts[("kzisp", "https://news.test/")] == "tls.cert_invalid"
        assert verdicts[("kzisp", "https://reset.test/")] == "tls.reset"
        assert verdicts[("kzinstalled", "https://news.test/")] == "ok"
        assert verdicts[("kzinstalled", "https://social.test/")] == "http.blockpage"
        check_openssl(lab_name)
        curl = exec_(lab_name, "kzisp", "curl", "-sS", "--max-time", "10", "https://news.test/")
        assert curl.returncode == 60, curl.stderr  # curl: the peer's certificate cannot be verified
        relayed = exec_(lab_name, "kzisp", "curl", "-sSk", "--max-time", "10", "https://news.test/")
        assert relayed.returncode == 0 and "news.test — lab origin" in relayed.stdout, relayed.stderr
        page = exec_(lab_name, "kzisp", "curl", "-sSk", "--max-time", "10", "https://social.test/")
        assert page.returncode == 0 and PAGE in page.stdout, page.stderr
        trusted = exec_(lab_name, "kzinstalled", "curl", "-sS", "--max-time", "10", "https://social.test/")
        assert trusted.returncode == 0 and PAGE in trusted.stdout, trusted.stderr  # no -k: the CA is installed
        reset = exec_(lab_name, "kzisp", "curl", "-sS", "--max-time", "10", "https://reset.test/")
        assert reset.returncode == 35 and "reset" in reset.stderr, reset.stderr  # the middlebox, through the splice
    finally:
        down = harness("down", lab_name)
        assert down.returncode == 0, down.stdout + down.stderr
    assert_no_leftovers(lab_name)


@pytest.mark.docker
def test_interception_compose(lab_name: str, tmp_path: Path) -> None:
    """The compose lab image has openssl but no curl (see tests/lab/test_exec.py)."""
    from netlab.deploy.images import build_image

    try:
        build_image()
    except Exception as exc:  # no Docker Engine here
        pytest.skip(f"no lab image: {exc}")
    up = harness("up", str(SCENARIO), "--name", lab_name, "--backend", "compose")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        verdicts = measure(lab_name, tmp_path / "r", backend="compose")
        assert verdicts[("kzisp", "https://social.test/")] == "tls.cert_invalid"
        check_openssl(lab_name)
    finally:
        down = harness("down", lab_name)
        assert down.returncode == 0, down.stdout + down.stderr
    assert not Path(f"/run/netlab/{lab_name}").exists()
