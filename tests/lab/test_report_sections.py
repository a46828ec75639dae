"""The HTML report's sections (issue 19 item 8), rendered by headless Chromium: what ran (probe
type, dates, versions), mismatches first, the SVG chart of verdicts per ISP and technique,
enforcement per ISP, probe errors; one offline file."""

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

from harness.campaign import CampaignConfig
from harness.runner import run_scenario

FLAGS = ["--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", "--window-size=1300,1900"]


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """In a network namespace of its own (`unshare --net`): it reaches nothing but the file."""
    exe = shutil.which("chromium")
    assert exe is not None
    return subprocess.run(["unshare", "--net", exe, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (scripts/setup.sh)")
def test_report_sections_in_headless_chromium(lab_name: str, tmp_path: Path) -> None:
    out = tmp_path / "results"
    outcome = run_scenario(ROOT / "scenarios" / "telegram-2018.yaml", out=out, name=lab_name,
                           config=CampaignConfig(probe="tcp"))
    assert_no_leftovers(lab_name)
    assert outcome.scored is not None and outcome.scored.score.passed
    # A wrong pin (one mismatch) and a probe error recorded in run.json: both must be shown.
    saved = out / "scenario.yaml"
    text = saved.read_text()
    isp = outcome.scored.scenario.isps[0].name
    url = outcome.scored.scenario.targets[0].url
    pin = f"expect:\n  {isp}:\n    {url}: dns.servfail\n"  # a stage the tcp probe reaches
    saved.write_text(re.sub(r"(?m)^expect:\n", pin, text, count=1) if re.search(r"(?m)^expect:", text)
                     else text + "\n" + pin)
    info = json.loads((out / "run.json").read_text())
    info["errors"] = [{"vantage": isp, "url": "https://extra.test/", "kind": "contract", "error": "probe 'x' omitted"}]
    (out / "run.json").write_text(json.dumps(info))

    page = tmp_path / "report.html"
    res = subprocess.run([sys.executable, "-m", "harness", "report", str(out), "-o", str(page), "--check"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, "CI": "true"})
    assert res.returncode == 1, res.stdout + res.stderr
    html = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the report must not load anything"

    dom = chromium(page, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-3000:]
    d = dom.stdout
    assert 'data-ready="1"' in d  # the page's script ran
    about = re.search(r'<table id="about">(.*?)</table>', d, re.S).group(1)
    assert "tcp 0.2.0 (urlgetter)" in about and "dns → tcp" in about and "tls, http stage" in about
    assert re.search(r"measured \(UTC\)</th><td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d – ", about)
    assert "report by fauxisp" in about
    # Mismatches first: the table right after the summary, and the first measurement section.
    assert d.index('id="mismatches"') < d.index('id="chart"') < d.index('id="verdicts"')
    mism = re.search(r'<table id="mismatches">(.*?)</table>', d, re.S).group(1)
    assert mism.count("<tr data-vantage") == 1 and url in mism and "pinned by the scenario" in mism
    first = re.search(r'<section class="m[^"]*" id="[^"]*" data-match="(\w+)"', d)
    assert first is not None and first.group(1) == "false"
    # The chart: one bar segment per (vantage, family), counts adding up to the rows.
    bars = re.findall(r'<rect class="bar" data-vantage="([^"]+)" data-family="([^"]+)" data-count="(\d+)"', d)
    assert {v for v, _, _ in bars} == set(outcome.scored.vantages)
    assert sum(int(n) for _, _, n in bars) == len(outcome.scored.score.rows)
    assert any(f == "tcp" for _, f, _ in bars)
    # Enforcement per ISP (collateral damage, effectiveness per service) and probe errors.
    impact = re.search(r'<table id="impact">(.*?)</table>', d, re.S).group(1)
    assert "telegram: effectiveness" in impact
    assert all(f'data-isp="{i.name}"' in impact for i in outcome.scored.scenario.isps)
    errors = re.search(r'<table id="probe-errors">(.*?)</table>', d, re.S).group(1)
    assert "contract" in errors and "https://extra.test/" in errors

    shot = tmp_path / "report.png"
    res = chromium(page, tmp_path / "profile2", f"--screenshot={shot}")
    assert res.returncode == 0 and shot.stat().st_size > 10_000
