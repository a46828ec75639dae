"""harness report: one self-contained HTML file, checked in headless Chromium (Debian's
`chromium`, run in a network namespace of its own: it reaches nothing but the file)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, assert_no_leftovers

from harness.runner import run_scenario

DEMO = ROOT / "scenarios" / "demo.yaml"
CHROMIUM_FLAGS = ["--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update", "--enable-logging=stderr",
                  "--v=0", "--window-size=1400,2000"]


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**os.environ, "CI": "true"})


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Chromium on a file:// URL inside `unshare --net`: no network but loopback, whatever it tries."""
    exe = shutil.which("chromium")
    assert exe is not None
    return subprocess.run(["unshare", "--net", exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args,
                           page.as_uri()], capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    """What the page's own scripts logged or threw. Chromium's own pages log too (a headless
    screenshot once logged "Slow network is detected" from chrome://resources/...): not the report."""
    return [line for line in stderr.splitlines()
            if (":CONSOLE" in line or "Uncaught" in line) and "source: chrome://" not in line]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (FAUXISP_EXTRA_APT=chromium)")
def test_report_in_headless_chromium(lab_name: str, tmp_path: Path) -> None:
    out = tmp_path / "results"
    outcome = run_scenario(DEMO, out=out, name=lab_name)
    assert_no_leftovers(lab_name)
    assert outcome.scored is not None and not outcome.scored.score.mismatches
    # A wrong pin in the saved scenario: the report must show the mismatch (and --check exit 1).
    saved = out / "scenario.yaml"
    saved.write_text(saved.read_text().replace("  isp-b:\n", "  isp-b:\n    https://ok.test/: tls.reset\n", 1))

    page = tmp_path / "report.html"
    res = harness("report", str(out), "-o", str(page), "--check")
    assert res.returncode == 1, res.stdout + res.stderr
    html = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the report must not load anything"

    dom = chromium(page, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-3000:]
    assert console_messages(dom.stderr) == [], console_messages(dom.stderr)
    assert 'data-ready="1"' in dom.stdout  # the page's script ran to the end
    for vantage, url, verdict in [("isp-a", "https://news.test/", "dns.nxdomain"),
                                  ("isp-a", "https://video.test/", "tcp.timeout"),
                                  ("isp-b", "https://social.test/", "tls.reset"),
                                  ("isp-b", "http://news.test/", "http.blockpage"),
                                  ("isp-b", "https://ok.test/", "throttled"),
                                  ("control", "https://ok.test/", "ok")]:
        assert f'data-vantage="{vantage}" data-url="{url}" data-verdict="{verdict}"' in dom.stdout, (vantage, url)
    assert 'class="v fam-throttled mismatch" data-vantage="isp-b" data-url="https://ok.test/"' in dom.stdout
    assert 'data-expected="tls.reset"' in dom.stdout
    assert 'data-technique="dns"' in dom.stdout and 'data-expected="tls.reset" data-observed="throttled"' in dom.stdout
    assert dom.stdout.count('<section class="m"') == 21 and dom.stdout.count("<summary>OONI JSON</summary>") == 21
    assert 'data-step="tls"' in dom.stdout and 'data-step="http"' in dom.stdout

    shot = tmp_path / "report.png"
    res = chromium(page, tmp_path / "profile2", f"--screenshot={shot}")
    assert res.returncode == 0 and shot.stat().st_size > 10_000, res.stderr[-2000:]
    assert console_messages(res.stderr) == []
    if os.environ.get("FAUXISP_KEEP_REPORT"):
        shutil.copy(shot, os.environ["FAUXISP_KEEP_REPORT"])


def test_replay_a_test_list_then_report(lab_name: str, tmp_path: Path) -> None:
    """`harness run --targets list.csv --json`: the lab's own names are measured (the scenario's
    targets replaced), every other row is skipped with its reason, and the report shows them."""
    csv = tmp_path / "zz.csv"
    csv.write_text("url,category_code,category_description,date_added,source,notes\n"
                   "https://www.facebook.com/,GRP,Social Networking,2014-04-15,citizenlab,\n"
                   "https://news.test/politics,NEWS,News Media,2017-04-12,citizenlab,\n"
                   "http://news.test/,NEWS,News Media,2017-04-12,citizenlab,\n"
                   "https://social.test/,GRP,Social Networking,2014-04-15,citizenlab,\n")
    out = tmp_path / "r"
    res = harness("run", str(DEMO), "--name", lab_name, "--targets", str(csv), "--json", "--check", "--out", str(out))
    assert_no_leftovers(lab_name)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout)
    assert [s["url"] for s in summary["skipped_targets"]] == ["https://www.facebook.com/"]
    assert "not a site of scenario demo" in summary["skipped_targets"][0]["reason"]
    assert "skipped https://www.facebook.com/" in res.stderr
    verdicts = {(v["vantage"], v["url"]): v["verdict"] for v in summary["verdicts"]}
    assert {u for _, u in verdicts} == {"https://news.test/politics", "http://news.test/", "https://social.test/"}
    assert verdicts[("isp-a", "https://news.test/politics")] == "dns.nxdomain"
    assert verdicts[("isp-b", "http://news.test/")] == "http.blockpage"
    assert verdicts[("isp-b", "https://social.test/")] == "tls.reset"
    assert summary["score"]["mismatches"] == 0 and summary["measurements"] == 9
    assert (out / "skipped-targets.json").exists()
    # The folder rescores with the targets it measured (run.json records them), not the scenario file's.
    rescored = harness("score", str(out), "--json", "--check")
    assert rescored.returncode == 0, rescored.stdout + rescored.stderr
    assert {(v["vantage"], v["url"]): v["verdict"] for v in json.loads(rescored.stdout)["verdicts"]} == verdicts
    page = tmp_path / "list.html"
    assert harness("report", str(out), "-o", str(page), "--check").returncode == 0
    assert 'data-vantage="isp-a" data-url="https://news.test/politics" data-verdict="dns.nxdomain"' in page.read_text()
