"""Other detectors scored against the ground truth (issue 19 items 4-6): foreign OONI measurements
(`harness score --scenario --measurements`), analysis programs (`--analysis`), and A/B comparison
of two runs (`harness compare`). One demo lab, measured with the web and the tcp probe types."""

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

from harness.campaign import CampaignConfig
from harness.runner import measure_and_score
from netlab.backends import get_backend
from netlab.compile import compile_lab
from netlab.loader import load_scenario

DEMO = ROOT / "scenarios" / "demo.yaml"
EXAMPLE = ROOT / "examples" / "analysis" / "my_detector.py"


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**os.environ, "CI": "true"})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """results folders of the demo: {"web": ..., "tcp": ...}, from one lab."""
    name = f"{lab_name_prefix()}{uuid.uuid4().hex[:6]}"
    scenario = load_scenario(DEMO)
    base = tmp_path_factory.mktemp("detectors")
    lab = get_backend("netns").up(compile_lab(scenario, name))
    try:
        out = {p: base / p for p in ("web", "tcp")}
        for p, d in out.items():
            outcome = measure_and_score(lab, scenario, d, CampaignConfig(probe=p))
            assert outcome.scored is not None and outcome.scored.score.passed
    finally:
        lab.down()
    assert_no_leftovers(name)
    yield out


def score_json(*args: str) -> dict:
    res = harness("score", "--json", *args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(res.stdout)


def test_foreign_measurements_score_like_the_run(runs: dict[str, Path]) -> None:
    """The harness's own web measurements, fed back as foreign OONI measurements (keyed by probe_ip),
    score the same as the run itself."""
    own = json.loads((runs["web"] / "score.json").read_text())
    foreign = score_json("--scenario", str(DEMO), "--measurements", str(runs["web"] / "measurements.jsonl"))
    for key in ("rows", "scored", "mismatches", "accuracy", "passed"):
        assert foreign[key] == own[key], key
    assert set(foreign["techniques"]) == {"dns", "tcp_ip", "http-failure", "http-diff"}
    assert foreign["techniques"]["dns"]["recall"] == 1.0
    res = harness("score", "--check", "--scenario", str(DEMO), "--measurements",
                  str(runs["web"] / "measurements.jsonl"))
    assert res.returncode == 0 and "Score: 21/21" in res.stdout


def test_foreign_measurements_of_one_vantage(runs: dict[str, Path], tmp_path: Path) -> None:
    """--vantage names where they come from; every target is expected from it (a missing one is a
    no_measurement mismatch); a wrong call is a mismatch with the rule and the uid (exit 1 with --check)."""
    lines = [json.loads(x) for x in (runs["web"] / "measurements.jsonl").read_text().splitlines()]
    mine = [m for m in lines if m["x_vantage"] == "isp-a"]
    for m in mine:
        m["probe_ip"] = "192.0.2.1"  # not a vantage's address: --vantage decides
    wrong = next(m for m in mine if m["input"] == "https://www.blog.test/")
    wrong["test_keys"]["blocking"], wrong["test_keys"]["accessible"] = False, True
    dropped = next(m for m in mine if m["input"] == "https://ok.test/")
    f = tmp_path / "isp-a.jsonl"
    f.write_text("".join(json.dumps(m) + "\n" for m in mine if m is not dropped))
    res = harness("score", "--check", "--scenario", str(DEMO), "--measurements", str(f), "--vantage", "isp-a")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Score: 5/7" in res.stdout
    assert "firewall rule line" in res.stdout and wrong["measurement_uid"] in res.stdout
    assert "no_measurement (missing)" in res.stdout
    res = harness("score", "--scenario", str(DEMO), "--measurements", str(f))
    assert res.returncode == 2 and "'192.0.2.1' is no vantage's address" in res.stdout


def test_an_analysis_program_is_scored(runs: dict[str, Path]) -> None:
    ooni = score_json(str(runs["web"]), "--analysis", f"{sys.executable} {EXAMPLE}")
    assert ooni["passed"] and ooni["scored"] == 21 and "http-diff" in ooni["techniques"]
    by_path = score_json(str(runs["web"]), "--analysis", f"{sys.executable} {EXAMPLE} {{}}")
    assert by_path["accuracy"] == ooni["accuracy"]
    # Lab verdicts are scored as verdicts: here the lab's own, so the same score as the run's.
    own = json.loads((runs["web"] / "score.json").read_text())
    lab = score_json(str(runs["web"]), "--analysis", f"{sys.executable} -c \"import json,sys\n"
                     "for l in sys.stdin: m = json.loads(l); print(json.dumps({'measurement_uid': "
                     "m['measurement_uid'], 'verdict': m['test_keys']['x_verdict']}))\"")
    assert lab["techniques"] == own["techniques"] and lab["passed"]


def test_a_broken_analysis_is_a_clear_error(runs: dict[str, Path]) -> None:
    crash = harness("score", str(runs["web"]), "--analysis", f"{sys.executable} -c 'import sys; sys.exit(5)'")
    assert crash.returncode == 3 and "exited with status 5" in crash.stdout
    skip_first = (f"{sys.executable} -c \"import json,sys\nfor l in list(sys.stdin)[1:]: m = json.loads(l); "
                  "print(json.dumps({'measurement_uid': m['measurement_uid'], 'blocking': False, "
                  "'accessible': True}))\"")
    first = json.loads((runs["web"] / "measurements.jsonl").read_text().splitlines()[0])
    missing = harness("score", str(runs["web"]), "--analysis", skip_first)
    assert missing.returncode == 2 and first["measurement_uid"] in missing.stdout
    assert "no line for 1 of 21" in missing.stdout
    bad = harness("score", str(runs["web"]), "--analysis",
                  "echo '{\"measurement_uid\": \"nope\", \"verdict\": \"ok\"}'")
    assert bad.returncode == 2 and "nope" in bad.stdout


def test_compare_two_probe_types_and_a_regression(runs: dict[str, Path], tmp_path: Path) -> None:
    res = harness("compare", str(runs["tcp"]), str(runs["web"]))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "5 verdict(s) differ" in res.stdout and "regression" not in res.stdout.split("differ")[1]
    # B: the web run with a pin that its verdict contradicts -> B wrong where A was right.
    b = tmp_path / "b"
    shutil.copytree(runs["web"], b)
    saved = b / "scenario.yaml"
    saved.write_text(saved.read_text().replace("  isp-b:\n", "  isp-b:\n    https://news.test/: tls.reset\n", 1))
    res = harness("compare", str(runs["web"]), str(b), "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["regressions"] == 1
    assert [(d["vantage"], d["url"]) for d in doc["differences"]] == [("isp-b", "https://news.test/")]
    assert harness("compare", str(runs["web"]), str(runs["web"])).returncode == 2
